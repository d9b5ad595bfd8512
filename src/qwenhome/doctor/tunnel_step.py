"""The proxy step: CONNECT through an HTTP proxy to the target."""

from __future__ import annotations

import base64
import socket

from .context import USER_AGENT, Context, StepFailed, Target
from .model import Check, failed, passed
from .proxy import Proxy


# -- proxy tunnel ------------------------------------------------------------
def proxy_auth(proxy: Proxy) -> dict[str, str]:
    if not proxy.auth:
        return {}
    raw = f"{proxy.auth[0]}:{proxy.auth[1]}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > 65536:
            break
    return data


def tunnel(ctx: Context, sock: socket.socket, proxy: Proxy, target: Target, check_id: str) -> Check:
    """CONNECT through the proxy; raises StepFailed with the proxy named."""
    sock.settimeout(ctx.deadline.bound(ctx.opts.timeouts.read))
    lines = [f"CONNECT {target.host}:{target.port} HTTP/1.1", f"Host: {target.host}:{target.port}",
             f"User-Agent: {USER_AGENT}"]
    lines += [f"{k}: {v}" for k, v in proxy_auth(proxy).items()]
    vars_ = " ".join(proxy.variables) or "HTTPS_PROXY"
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = _read_head(sock)
    except TimeoutError:
        raise StepFailed(failed(
            check_id, "response-timeout",
            f"the proxy {proxy.display} accepted the connection but did not answer CONNECT "
            f"{target.host}:{target.port}",
            f"check the proxy: restart it, or correct/unset {vars_}", target.host, proxy=proxy.display,
        )) from None
    except OSError as exc:
        raise StepFailed(failed(
            check_id, "proxy-connection-failed",
            f"the proxy {proxy.display} dropped the CONNECT to {target.host}: {exc.strerror or exc!r}",
            f"check the proxy, or correct/unset {vars_}", target.host, proxy=proxy.display,
        )) from None
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = status_line.split()
    if len(parts) < 2 or parts[1] != "200":
        hint = (" (it wants credentials: put them in the proxy URL, http://user:pass@host:port)"
                if len(parts) > 1 and parts[1] == "407" else "")
        raise StepFailed(failed(
            check_id, "proxy-connection-failed",
            f"the proxy {proxy.display} refused CONNECT {target.host}:{target.port}: "
            f"{status_line or 'no answer'}{hint}",
            f"allow {target.host} on the proxy, add it to NO_PROXY if it is reachable directly, "
            f"or correct {vars_}", target.host, proxy=proxy.display,
        ))
    return passed(check_id, f"the proxy {proxy.display} tunnels to {target.host}:{target.port}",
                  target.host, proxy=proxy.display)
