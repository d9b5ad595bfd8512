"""The Xet hosts a Hub source's files would come through, learnt as the
client learns them (:mod:`qwenhome.hub.xet`): the resolve answer's
``xet-auth`` link (the token endpoint), the token's ``casUrl`` (the CAS), a
one-byte reconstruction's signed URLs (the xorb hosts), then one byte of a
xorb. A host met for the first time gets the doctor's DNS, TCP and TLS
checks; each gets one ``xet-{role}:{host}`` check that says whether a pull
can use it, with the words and fix ``qwenhome sources --probe`` uses too
(:mod:`.xetadvice`). It comes before the host's step checks, so that the
verdict names the Xet host rather than the step."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from ..config import Source
from ..hub.xet import XetFileInfo
from ..net import token_for
from ..xet.errors import XetAnswerError
from ..xet.token import XetToken
from .context import Response, StepFailed
from .model import Check, failed, passed
from .probe import HostProbe
from .xetadvice import ROLE_WORDS, advice

# (url, where it came from) -> the probe to ask it with, and whether its step checks are this chain's to report
ProbeFor = Callable[[str, str], tuple[HostProbe, bool]]

_HINTS = {  # what to do about an error answer, by status
    401: "set HF_TOKEN (or the source's token in the config) to a token that may read the repository",
    403: "a signed URL is refused when the local clock is off (check `date`) or when the token may not read "
         "the repository (HF_TOKEN)",
}


def check_xet(source: Source, info: XetFileInfo, probe_for: ProbeFor) -> list[Check]:
    """The checks of the token endpoint, the CAS and the xorb host that ``info``
    leads to, as far as the chain gets (a host that fails ends it)."""
    out: list[Check] = []
    probe_for = _once(probe_for)
    hub_token = token_for(source.token, source.url, info.token_url)
    resp = _ask(out, "token", info.token_url, f"the xet-auth link of {source.label}'s resolve answer", probe_for,
                {"Authorization": f"Bearer {hub_token}"} if hub_token else {})
    if resp is None:
        return out
    token_host = _host(info.token_url)
    try:
        token = XetToken.from_json(resp.body)
    except XetAnswerError as exc:
        header_token = XetToken.from_headers(dict(resp.headers.items()))
        if header_token is None:
            out.append(_failed("token", info.token_url, exc.code, exc.message))
            return out
        token = header_token
    cas = token.cas_url.rstrip("/")
    out.append(passed(f"xet-token:{token_host}", f"the {ROLE_WORDS['token']} {_where(info.token_url)} gives a "
                      f"token for the CAS {_where(cas)}", token_host))
    cas_auth = token_for(token.access_token, token.cas_url, f"{cas}/")
    headers = {"Range": "bytes=0-0", **({"Authorization": f"Bearer {cas_auth}"} if cas_auth else {})}
    for version in (2, 1):  # a CAS before v2 answers 404 or 501 to it
        url = f"{cas}/v{version}/reconstructions/{info.file_hash}"
        resp = _ask(out, "cas", url, f"the casUrl of the Xet token from {source.label}", probe_for, headers,
                    retry=version == 2)
        if resp is None:
            return out
        if resp.status < 400:
            break
    from ..xet.reconstruction import parse_reconstruction  # (loads numpy: only for a Xet source)

    try:
        answer = parse_reconstruction(resp.body)
    except XetAnswerError as exc:
        out.append(_failed("cas", cas, exc.code, exc.message))
        return out
    fetches = [f for fs in answer.xorbs.values() for f in fs if f.ranges]
    if not fetches:
        out.append(passed(f"xet-cas:{_host(cas)}", f"the {ROLE_WORDS['cas']} {_where(cas)} answers; its "
                          "reconstruction names no xorb", _host(cas)))
        return out
    out.append(passed(f"xet-cas:{_host(cas)}", f"the {ROLE_WORDS['cas']} {_where(cas)} answers reconstructions "
                      f"(xorbs from {_where(fetches[0].url)})", _host(cas)))
    first = fetches[0]
    start = first.ranges[0].bytes.start
    resp = _ask(out, "xorb", first.url, f"a signed URL in the reconstruction from {_host(cas)}", probe_for,
                {"Range": f"bytes={start}-{start}"})
    if resp is not None:
        out.append(passed(f"xet-xorb:{_host(first.url)}", f"the {ROLE_WORDS['xorb']} {_where(first.url)} serves "
                          f"xorb bytes (HTTP {resp.status})", _host(first.url)))
    return out


def _once(probe_for: ProbeFor) -> ProbeFor:
    """``probe_for`` asked once per origin: later requests reuse the route (and report no step twice)."""
    seen: dict[tuple[str, str, int], HostProbe] = {}

    def probe(url: str, origin: str) -> tuple[HostProbe, bool]:
        parts = urlsplit(url)
        key = (parts.scheme, _host(url), _port(url))
        if key in seen:
            return seen[key], False
        got, own = probe_for(url, origin)
        seen[key] = got
        return got, own

    return probe


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _where(url: str) -> str:
    """host[:port] as messages show it (never a user name or a signed query)."""
    return urlsplit(url).netloc.rpartition("@")[2]


def _port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def _failed(role: str, url: str, code: str, detail: str = "", hint: str = "") -> Check:
    host = _host(url)
    summary, fix = advice(role, host, _port(url), code, detail, hint)
    return failed(f"xet-{role}:{host}", code, summary, fix, host, role=role)


def _ask(out: list[Check], role: str, url: str, origin: str, probe_for: ProbeFor, headers: Mapping[str, str],
         retry: bool = False) -> Response | None:
    """GET ``url``: the answer, or None with the failing checks added to ``out``
    (an error status too, unless ``retry`` and it is 404 or 501)."""
    probe, own = probe_for(url, origin)
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    host = probe.target.host
    try:
        resp = probe.request("GET", path, f"xet-{role}:{host}", headers)
    except StepFailed as exc:
        steps = [c for c in probe.checks if c.status == "fail" and c.code]
        cause = steps[-1] if steps else exc.check
        out.append(_failed(role, url, cause.code or "connection-failed",
                           "" if steps else cause.summary))
        out.extend(probe.checks if own else [])
        return None
    out.extend(probe.checks if own else [])
    if resp.status >= 400 and not (retry and resp.status in (404, 501)):
        said = resp.header("X-Error-Message") or resp.body[:200].decode("utf-8", "replace").strip()
        out.append(_failed(role, url, "http-error", f"HTTP {resp.status}{': ' + said[:120] if said else ''}",
                           _HINTS.get(resp.status, "")))
        return None
    return resp
