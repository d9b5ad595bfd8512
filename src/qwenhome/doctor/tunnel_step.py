"""The proxy step: CONNECT through an HTTP proxy to the target."""

from __future__ import annotations

import base64
import socket

from ..net.steps import tunnel as connect_tunnel
from .context import USER_AGENT, Context, StepFailed, Target
from .model import Check, failed, passed
from .proxy import Proxy


# -- proxy tunnel ------------------------------------------------------------
def proxy_auth(proxy: Proxy) -> dict[str, str]:
    if not proxy.auth:
        return {}
    raw = f"{proxy.auth[0]}:{proxy.auth[1]}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}


def tunnel(ctx: Context, sock: socket.socket, proxy: Proxy, target: Target, check_id: str) -> Check:
    """CONNECT through the proxy; raises StepFailed with the proxy named."""
    sock.settimeout(ctx.deadline.bound(ctx.opts.timeouts.read))
    vars_ = " ".join(proxy.variables) or "HTTPS_PROXY"
    try:
        status, status_line = connect_tunnel(sock, target.host, target.port,
                                             {"User-Agent": USER_AGENT, **proxy_auth(proxy)})
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
    if status != 200:
        hint = (" (it wants credentials: put them in the proxy URL, http://user:pass@host:port)"
                if status == 407 else "")
        raise StepFailed(failed(
            check_id, "proxy-connection-failed",
            f"the proxy {proxy.display} refused CONNECT {target.host}:{target.port}: "
            f"{status_line or 'no answer'}{hint}",
            f"allow {target.host} on the proxy, add it to NO_PROXY if it is reachable directly, "
            f"or correct {vars_}", target.host, proxy=proxy.display,
        ))
    return passed(check_id, f"the proxy {proxy.display} tunnels to {target.host}:{target.port}",
                  target.host, proxy=proxy.display)
