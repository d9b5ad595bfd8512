"""One exception tree for qwenhome, with stable kebab-case codes.

Every error a user can see is a :class:`QwenhomeError` carrying a ``code``
(stable, documented, also used by the doctor and the web API), a one-line
``message``, a ``hint`` that says what to do, and optional ``context``.

    QwenhomeError
    ├── UsageError                 bad input from the user (invalid-repo-id, invalid-revision, …)
    ├── ConfigError                unreadable or invalid configuration (config-invalid, ca-bundle-invalid)
    ├── StoreError                 the on-disk home
    │   ├── NotCachedError         snapshot-not-found, snapshot-incomplete
    │   ├── DiskFullError          disk-full
    │   ├── ReadOnlyHomeError      home-read-only
    │   ├── LockTimeoutError       lock-timeout
    │   └── IntegrityError         hash-mismatch, size-mismatch
    ├── RemoteError                a source answered, but not with what we need
    │   ├── RepoNotFoundError      repo-not-found
    │   ├── RevisionNotFoundError  revision-not-found
    │   ├── EntryNotFoundError     entry-not-found
    │   ├── AuthError              gated-repo, unauthorized
    │   ├── RateLimitedError       rate-limited (transient)
    │   ├── ServerError            server-error (transient), http-error
    │   └── ProtocolError          not-a-hub, bad-metadata, unsafe-path
    ├── NetworkError               transient transport failure (retryable)
    │   ├── ConnectError           dns-resolution-failed, connection-refused, connection-timeout, tls-verification-failed
    │   ├── ReadTimeoutError       response-timeout, stalled
    │   └── TransferInterrupted    connection-dropped
    └── OfflineError               offline (the network is needed and not there)

The image engine adds its leaves in ``images/errors.py`` (invalid-image-size,
invalid-image, job-not-found, queue-full, image-model-invalid, …), under the
same root so that the CLI and the web API render them the same way. The Xet
format adds its own in ``xet/errors.py`` (xet-corrupt under IntegrityError;
xet-bad-reconstruction, xet-bad-token, xet-bad-hash, xet-bad-recipe under
ProtocolError).

Exit codes are per family (see ``EXIT_CODES``) so scripts can branch on them.
"""

from __future__ import annotations

import re
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4
EXIT_NETWORK = 5
EXIT_INTEGRITY = 6
EXIT_DISK = 7
EXIT_OFFLINE = 8
EXIT_INTERRUPTED = 130


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_USERINFO = re.compile(r"(?i)\b(https?://)[^/\s@]*@")
# A query's credential (a CDN's or a proxy's ``?token=``); a signed URL's
# signature is bound to one object and expires: it stays, for debugging.
_QUERY_TOKEN = re.compile(r"(?i)([?&;](?:token|access_token|auth_token|api_key|apikey)=)[^&#\s'\"]+")
# An Authorization header's value, however it is written (a line, a dict).
_AUTHORIZATION = re.compile(r"(?i)((?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?(?:bearer\s+|basic\s+|token\s+)?)"
                            r"[^\s'\",}]+")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")


def redact(text: str) -> str:
    """``text`` without credentials: the ``user:password@`` of every URL, the
    value of a ``token=`` or ``access_token=`` query parameter and of an
    ``Authorization`` header or ``Bearer`` token. Every message and every
    log line goes through here (a source given as ``https://user:secret@host``
    is named in both, and so is a redirect's signed URL)."""
    if "@" in text:
        text = _USERINFO.sub(r"\1", text)
    if "=" in text:
        text = _QUERY_TOKEN.sub(r"\1***", text)
    lowered = text.lower()
    if "authorization" in lowered:
        text = _AUTHORIZATION.sub(r"\1***", text)
    if "bearer" in lowered:
        text = _BEARER.sub(r"\1***", text)
    return text


def printable(text: str) -> str:
    """``text`` fit for one line of a terminal: control characters shown as
    escapes (``\\x1b``, ``\\n``), URLs without their credentials. Messages
    quote servers and file names, whose ESC sequences would otherwise drive
    the user's terminal."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], redact(text))


class QwenhomeError(Exception):
    """Root of every error qwenhome raises on purpose."""

    code: str = "error"
    exit_code: int = EXIT_FAILURE
    default_hint: str = ""
    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        hint: str | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.hint = hint if hint is not None else self.default_hint
        self.context: dict[str, Any] = context

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": redact(self.message), "hint": redact(self.hint)}
        if self.context:
            out["context"] = {k: redact(str(v)) for k, v in self.context.items()}
        return out

    def one_line(self) -> str:
        line = f"error[{self.code}]: {self.message}"
        if self.hint:
            line += f" (hint: {self.hint})"
        return printable(line)


class UsageError(QwenhomeError):
    code = "usage"
    exit_code = EXIT_USAGE


class ConfigError(QwenhomeError):
    code = "config-invalid"
    exit_code = EXIT_USAGE
    default_hint = "fix or remove the file; `qwenhome doctor` shows the effective configuration"


class StoreError(QwenhomeError):
    code = "store-error"


class NotCachedError(StoreError):
    code = "snapshot-not-found"
    exit_code = EXIT_NOT_FOUND
    default_hint = "run `qwenhome pull REPO` while online, or `qwenhome adopt` to reuse another cache"


class DiskFullError(StoreError):
    code = "disk-full"
    exit_code = EXIT_DISK
    default_hint = "free space under QWEN_HOME or point --home at a larger disk; the partial download is kept and resumes"


class ReadOnlyHomeError(StoreError):
    code = "home-read-only"
    exit_code = EXIT_DISK
    default_hint = ("the home cannot be written (read-only filesystem or no permission): remount it read-write or "
                    "point QWEN_HOME / --home at a writable folder; path, ls, mirror serve and a pull of a complete "
                    "model work as is")


class LockTimeoutError(StoreError):
    code = "lock-timeout"
    default_hint = "another qwenhome process holds the lock; wait for it, or stop it"


class IntegrityError(StoreError):
    code = "hash-mismatch"
    exit_code = EXIT_INTEGRITY
    default_hint = "the bytes were corrupted in transit or on disk; pull again (bad files are never kept)"
    transient = True


class RemoteError(QwenhomeError):
    code = "http-error"
    exit_code = EXIT_NETWORK


class RepoNotFoundError(RemoteError):
    code = "repo-not-found"
    exit_code = EXIT_NOT_FOUND
    default_hint = "check the repository id (Org/Name); a private repo needs a token (HF_TOKEN)"


class RevisionNotFoundError(RemoteError):
    code = "revision-not-found"
    exit_code = EXIT_NOT_FOUND
    default_hint = "check the branch, tag or commit after '@'"


class EntryNotFoundError(RemoteError):
    code = "entry-not-found"
    exit_code = EXIT_NOT_FOUND
    default_hint = "the file is listed but the source does not serve it; try another source"


class AuthError(RemoteError):
    code = "unauthorized"
    exit_code = EXIT_AUTH
    default_hint = "set HF_TOKEN (or the source's token in config.toml); gated repos need access granted on the website"


class RateLimitedError(RemoteError):
    code = "rate-limited"
    transient = True
    default_hint = "the source limits request rate; qwenhome retried with backoff; wait or use a token"


class ServerError(RemoteError):
    code = "server-error"
    transient = True
    default_hint = "the source is failing; qwenhome retried; try again later or add a mirror source"


class ProtocolError(RemoteError):
    code = "bad-metadata"
    default_hint = "the source is not a Hub-compatible endpoint or sent invalid data; check HF_ENDPOINT / --source"


class NetworkError(QwenhomeError):
    code = "network-error"
    exit_code = EXIT_NETWORK
    transient = True
    default_hint = "run `qwenhome doctor` to find the cause"


class ConnectError(NetworkError):
    code = "connection-failed"


class ReadTimeoutError(NetworkError):
    code = "response-timeout"


class TransferInterrupted(NetworkError):
    code = "connection-dropped"


class OfflineError(QwenhomeError):
    code = "offline"
    exit_code = EXIT_OFFLINE
    default_hint = "connect to the network, or use what is cached (`qwenhome ls`)"
