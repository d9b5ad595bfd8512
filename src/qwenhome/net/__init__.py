"""The one transport: every connection qwenhome makes to a source goes
through this package.

- :mod:`.url`: :class:`Origin` (scheme, host, port) and :func:`token_for`,
  the rule that a token goes only to the origin it was given for.
- :mod:`.steps`: resolve, connect TCP, tunnel (``CONNECT``), wrap in TLS,
  one request on a connected socket; :mod:`.tls`: the one TLS context
  builder (the system's CAs or the configured bundle); :mod:`.proxy`: which
  proxy, from the environment copy.
- :mod:`.transport`: :class:`Transport`, connections made from those steps;
  :mod:`.client`: :class:`HttpClient` (pooled, bounded, redirects by hand);
  :mod:`.response`: :class:`Response` (read, or splice into a file).
- :mod:`.head`: the request head and the response-head parser for callers
  that drive sockets themselves; :mod:`.ranges`: ``Range``/``If-Range`` and
  ``Content-Range``.
- :mod:`.status` and :mod:`.translate`: an error status and a transport
  exception as typed errors from :mod:`qwenhome.errors`.
"""

from .client import HttpClient
from .ranges import ContentRange, parse_count, range_headers, strong_validator
from .response import Response
from .status import raise_for_status, status_error
from .translate import translate
from .transport import Transport
from .url import REDIRECT_CODES, Origin, token_for

__all__ = [
    "REDIRECT_CODES",
    "ContentRange",
    "HttpClient",
    "Origin",
    "Response",
    "Transport",
    "parse_count",
    "raise_for_status",
    "range_headers",
    "status_error",
    "strong_validator",
    "token_for",
    "translate",
]
