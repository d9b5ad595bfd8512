"""How a failing Xet host is told and fixed, in one place: the doctor's Xet
checks and ``qwenhome sources --probe`` say the same words."""

from __future__ import annotations

from .dns_step import is_well_known
from .verdict import is_public_host

ROLES = ("token", "cas", "xorb")  # in the order a client learns them
ROLE_WORDS = {"token": "Xet token endpoint", "cas": "Xet CAS host", "xorb": "Xet xorb host"}
CONNECT_CODES = ("connection-refused", "connection-timeout", "connection-failed", "connection-dropped")
FALLBACK = ("qwenhome falls back to the resolve bridge (slower, no chunk reuse); stock huggingface_hub "
            "with hf_xet fails here")
OTHER_TOOLS = "meanwhile other tools work without Xet: `export HF_HUB_DISABLE_XET=1`"


def advice(role: str, host: str, port: int, code: str, detail: str = "", hint: str = "") -> tuple[str, str]:
    """The summary and the fix for the ``role`` host ``host:port`` failing
    with ``code`` (``detail``: what the failing step said; ``hint``: the
    error's own hint, for a failure that is not the network's)."""
    what = f"the {ROLE_WORDS.get(role, 'Xet host')} {host}"
    public = is_public_host(host)
    if code == "dns-resolution-failed":
        cause = f"{what} does not resolve"
        fix = (f"your DNS does not resolve {host} (it may filter it): allow it in the DNS filter, or use a "
               "resolver that resolves it (`nameserver 1.1.1.1` in /etc/resolv.conf, or the DNS setting of "
               "your network or VPN)" if is_well_known(host) else
               f"make {host} resolve on this machine (its DNS record, or a line in /etc/hosts), or have the "
               "source name a Xet host that resolves here")
    elif code in CONNECT_CODES:
        verb = {"connection-refused": "refuses connections",
                "connection-timeout": "does not answer a TCP connect"}.get(code, "cannot be connected to")
        cause = f"{what} {verb} on port {port}"
        fix = (f"allow outbound TCP port {port} to {host} in the firewall, or set HTTPS_PROXY if your network "
               "only allows a proxy" if public else
               f"if {host} is your mirror, start it with Xet on that port (`qwenhome mirror serve --cas-port` / "
               f"`--xorb-port`); otherwise allow TCP port {port} to {host} in the firewall")
    elif code.startswith("tls") or code == "ca-bundle-invalid":
        cause = f"TLS with {what} fails"
        fix = ("if a proxy intercepts TLS, trust its CA: `export SSL_CERT_FILE=/path/to/proxy-ca.pem`; "
               f"otherwise ask the network administrator whether {host} is blocked")
    elif code.startswith("proxy"):
        cause = f"the proxy does not reach {what}"
        fix = f"let the proxy reach {host}:{port}, or add {host} to NO_PROXY if it is reachable directly"
    elif code.endswith("-timeout"):
        cause = f"{what} does not answer in time"
        fix = f"something on the path to {host} hangs: try again, then check the proxy and the firewall"
    else:
        cause = f"{what} answers with an error"
        fix = hint or "try again later"
    return f"{cause}{f' ({detail})' if detail else ''}: {FALLBACK}", f"{fix}; {OTHER_TOOLS}"
