"""The sources a pull would use: their API, and a real file's download
answer (its redirect names the CDN host, its Xet headers the token endpoint:
:mod:`.xet` follows them).

Hub: ``GET /api/models/{repo}/revision/main?blobs=true`` then
``HEAD /{repo}/resolve/main/{file}`` without following redirects.
ModelScope: ``GET /api/v1/models/{repo}/repo/files?Revision=master`` then a
one-byte ranged ``GET /api/v1/models/{repo}/repo?Revision=master&FilePath=...``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from ..config import Source
from ..hub.xet import XetFileInfo, file_info
from ..net import token_for
from .context import Context, Response, StepFailed, Target
from .model import Check, failed, passed, warned
from .probe import HostProbe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepoSize:
    repo: str
    total: int
    blobs: tuple[tuple[str, int], ...]  # (etag, size), to subtract what the store holds


@dataclass
class SourceResult:
    source: Source
    checks: list[Check] = field(default_factory=list)
    reachable: bool = False
    sizes: list[RepoSize] = field(default_factory=list)
    redirects: list[str] = field(default_factory=list)  # absolute URLs of discovered downloads
    xet: XetFileInfo | None = None  # the downloaded file's Xet side, when its resolve answer names one


def clock_check(ctx: Context, host: str, resp: Response) -> Check | None:
    date = resp.header("Date")
    if not date:
        return None
    try:
        server = parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError) as exc:
        log.debug("%s: Date %r not understood (%s): the clock is not checked", host, date, exc)
        return None
    skew = ctx.opts.clock() - server
    check_id = f"clock:{host}"
    if abs(skew) < ctx.opts.skew_warn_seconds:
        return passed(check_id, f"local clock agrees with {host} (off by {skew:+.0f} s)", host)
    ahead = "ahead of" if skew > 0 else "behind"
    words = f"the local clock is {_duration(abs(skew))} {ahead} {host}'s"
    fix = ("set the clock right and keep it synchronised: `sudo timedatectl set-ntp true` "
           "(on WSL: `sudo hwclock -s`, or `wsl --shutdown` from Windows)")
    if abs(skew) >= ctx.opts.skew_fail_seconds:
        return failed(check_id, "clock-skew",
                      f"{words}: certificates and signed download URLs will be rejected", fix, host,
                      skew_seconds=f"{skew:.0f}")
    return warned(check_id, "clock-skew", f"{words}: signed download URLs may be rejected", fix, host,
                  skew_seconds=f"{skew:.0f}")


def _duration(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 90:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _looks_html(resp: Response) -> bool:
    ctype = (resp.header("Content-Type") or "").lower()
    return "html" in ctype or resp.body.lstrip()[:1] == b"<"


def _html_title(body: bytes) -> str:
    text = body[:4096].decode("utf-8", "replace")
    low = text.lower()
    start = low.find("<title>")
    end = low.find("</title>")
    return " ".join(text[start + 7:end].split())[:80] if 0 <= start < end else ""


def interpret_api(check_id: str, source: Source, target: Target, repo: str, resp: Response,
                  kind: str) -> tuple[Check, Any]:
    """Judge an API answer: a Hub/ModelScope JSON document, or why not."""
    host = target.host
    where = f"{source.url} ({target.origin})"
    if 300 <= resp.status < 400:
        loc = resp.header("Location") or "?"
        return failed(
            check_id, "not-a-hub",
            f"{host} redirected the API request to {loc}: a captive portal or login page, not a Hub",
            f"log in to the network in a browser (captive portal), or point {target.origin} at a "
            "Hub endpoint", host, status=str(resp.status), location=loc,
        ), None
    if _looks_html(resp):
        title = _html_title(resp.body)
        return failed(
            check_id, "not-a-hub",
            f"{host} answered HTML (HTTP {resp.status}{', ' + repr(title) if title else ''}) instead of "
            "the Hub API: a captive portal, login page or a web server that is not a Hub",
            f"open {source.url} in a browser to log in to the network, or fix {target.origin} to "
            "point at a Hub endpoint", host, status=str(resp.status),
        ), None
    if resp.status >= 400:
        err = resp.header("X-Error-Message") or resp.body[:200].decode("utf-8", "replace").strip()
        if resp.status in (401, 403):
            cause = "the repository is gated or private, or the token is wrong"
            fix = ("set HF_TOKEN (or the source's token in the config), and accept the model's licence "
                   "on its page")
        elif resp.status == 404:
            cause = f"{repo} is not on this source"
            fix = f"check the repository id; a mirror may not carry {repo}: add another source"
        elif resp.status == 429:
            cause = "the source limits the request rate"
            fix = "wait a minute, or use a token (HF_TOKEN) for a higher limit"
        elif resp.status >= 500:
            cause = "the source is failing"
            fix = "try again later, or put another source first (`qwenhome doctor --fix`)"
        else:
            cause = "unexpected status"
            fix = f"check {where}"
        return failed(check_id, "http-error", f"{host} answered HTTP {resp.status} for {repo}: {cause}"
                      f"{' (' + err[:120] + ')' if err else ''}", fix, host, status=str(resp.status)), None
    try:
        doc = json.loads(resp.body)
    except (ValueError, RecursionError):  # (nested deeper than the decoder goes)
        doc = None
    ok = isinstance(doc, dict) and (
        ("sha" in doc or "siblings" in doc) if kind == "hf" else isinstance(doc.get("Data"), dict)
    )
    if not ok:
        return failed(
            check_id, "not-a-hub",
            f"{host} answered HTTP {resp.status} but not with {'Hub' if kind == 'hf' else 'ModelScope'} "
            "API data: it is not a Hub endpoint", f"fix {target.origin} to point at a Hub endpoint",
            host, status=str(resp.status),
        ), None
    return passed(check_id, f"{source.name} API answers for {repo}", host), doc


def _hf_files(doc: dict[str, Any]) -> tuple[list[str], RepoSize | None, str]:
    files: list[str] = []
    blobs: list[tuple[str, int]] = []
    total = 0
    sized = True
    for s in doc.get("siblings") or []:
        if not isinstance(s, dict) or not isinstance(s.get("rfilename"), str):
            continue
        files.append(s["rfilename"])
        lfs: dict[str, Any] = s["lfs"] if isinstance(s.get("lfs"), dict) else {}
        size = lfs.get("size", s.get("size"))
        etag = lfs.get("sha256") or lfs.get("oid") or s.get("blobId")
        if isinstance(size, int):
            total += size
            if isinstance(etag, str):
                blobs.append((etag, size))
        else:
            sized = False
    return files, (RepoSize("", total, tuple(blobs)) if sized and files else None), str(doc.get("sha") or "")


def _ms_files(doc: dict[str, Any]) -> tuple[list[str], RepoSize | None]:
    data = doc.get("Data") or {}
    files: list[str] = []
    blobs: list[tuple[str, int]] = []
    total = 0
    for f in data.get("Files") or []:
        if not isinstance(f, dict) or f.get("Type") == "tree" or not isinstance(f.get("Path"), str):
            continue
        files.append(f["Path"])
        size = f.get("Size")
        if isinstance(size, int):
            total += size
            if isinstance(f.get("Sha256"), str):
                blobs.append((f["Sha256"], size))
    return files, (RepoSize("", total, tuple(blobs)) if files else None)


def _pick_file(files: list[str]) -> str | None:
    """A weights file is the one that redirects to the CDN; else anything."""
    for suffix in (".safetensors", ".bin", ".gguf"):
        for f in files:
            if f.endswith(suffix):
                return f
    return files[0] if files else None


def check_source(ctx: Context, probe: HostProbe, source: Source, repos: list[str],
                 repos_chosen: bool = True) -> SourceResult:
    """API (per repository), clock, and the download redirect of one file.

    A 404 for the default repository (``repos_chosen`` False) only warns: a
    team mirror need not carry it."""
    result = SourceResult(source)
    base = urlsplit(source.url).path.rstrip("/")
    target = probe.target
    token = token_for(source.token, source.url, f"{target.scheme}://{target.netloc}/")
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    discovered_file: tuple[str, str] | None = None
    for i, repo in enumerate(repos):
        check_id = f"api:{source.name}" + (f":{repo}" if i else "")
        if source.kind == "modelscope":
            path = f"{base}/api/v1/models/{quote(repo)}/repo/files?Revision=master&Recursive=True"
        else:
            path = f"{base}/api/models/{quote(repo)}/revision/main?blobs=true"
        try:
            resp = probe.request("GET", path, check_id, auth)
        except StepFailed as exc:
            result.checks.append(exc.check)
            break
        check, doc = interpret_api(check_id, source, target, repo, resp, source.kind)
        if check.code == "http-error" and resp.status == 404 and not repos_chosen:
            check = replace(check, status="warn")
        result.checks.append(check)
        if i == 0:
            clock = clock_check(ctx, target.host, resp)
            if clock:
                result.checks.append(clock)
        if check.status != "pass":
            if check.code == "http-error" and resp.status == 404:
                result.reachable = True  # the source works; this repo is missing
            continue
        result.reachable = True
        assert isinstance(doc, dict)
        if source.kind == "modelscope":
            files, size = _ms_files(doc)
        else:
            files, size, _ = _hf_files(doc)
        if size is not None:
            result.sizes.append(RepoSize(repo, size.total, size.blobs))
        picked = _pick_file(files)
        if picked and discovered_file is None:
            discovered_file = (repo, picked)
    if discovered_file is not None:
        _discover(ctx, probe, source, base, auth, discovered_file, result)
    return result


def _discover(ctx: Context, probe: HostProbe, source: Source, base: str, auth: dict[str, str],
              repo_file: tuple[str, str], result: SourceResult) -> None:
    repo, file = repo_file
    check_id = f"resolve:{source.name}"
    if source.kind == "modelscope":
        method = "GET"
        path = f"{base}/api/v1/models/{quote(repo)}/repo?Revision=master&FilePath={quote(file)}"
        headers = {**auth, "Range": "bytes=0-0"}
    else:
        method = "HEAD"
        path = f"{base}/{quote(repo)}/resolve/main/{quote(file)}"
        headers = auth
    started = time.monotonic()
    try:
        resp = probe.request(method, path, check_id, headers)
    except StepFailed as exc:
        result.checks.append(exc.check)
        return
    host = probe.target.host
    if resp.status >= 400:
        result.checks.append(failed(
            check_id, "http-error", f"{host} answered HTTP {resp.status} for the download of {repo}/{file}",
            "the API works but downloads do not: try another source, or check the token", host,
            status=str(resp.status),
        ))
        return
    if source.kind == "hf" and not resp.header("X-Repo-Commit"):
        result.checks.append(warned(
            check_id, "not-a-hub",
            f"{host} answers downloads without the X-Repo-Commit header: huggingface_hub and "
            "transformers refuse such an endpoint (qwenhome can still pull from it)",
            f"point HF_ENDPOINT at a Hub-compatible server (e.g. `qwenhome mirror serve`) instead of {source.url}",
            host, status=str(resp.status),
        ))
        return
    location = resp.header("Location")
    where = ""
    if 300 <= resp.status < 400 and location:
        absolute = urljoin(f"{source.url.rstrip('/')}/", location)
        if urlsplit(absolute).hostname != host:
            result.redirects.append(absolute)
            where = f", served from {urlsplit(absolute).hostname}"
    if source.kind == "hf":
        result.xet = file_info(file, f"{probe.target.scheme}://{probe.target.netloc}{path}", resp.status,
                               resp.header)
    result.checks.append(passed(
        check_id, f"download of {repo}/{file} answers HTTP {resp.status}{where} "
        f"({(time.monotonic() - started) * 1000:.0f} ms)", host,
    ))
