"""``qwenhome.mirror``: serve a store or plain repository folders over the Hub protocol.

    with MirrorServer(StoreBackend(settings.hub_cache)) as server:
        snapshot_download("Org/Name", endpoint=server.url)

Stock ``huggingface_hub`` (``HF_ENDPOINT=server.url``), ``transformers`` and
qwenhome download from it. :class:`PullThroughBackend` fetches what the store
lacks from the mirror's own sources while streaming it to the client. With
``xet=XetOptions(...)`` the mirror answers Xet clients too, as its own CAS
(:mod:`.cas`). :func:`run_mirror` is what the CLI calls.
"""

from .backends import Backend, FolderBackend, StoreBackend
from .cas import XetOptions
from .catalog import FileEntry, Snapshot, git_blob_oid, lfs_pointer
from .hashing import HashCache
from .hooks import BodyInterrupted, BodySlice, BodyWriter, CannedResponse, Hooks, RequestInfo
from .listener import Limits
from .lookup import resolve_target
from .protocol import BadTarget, Route, parse_range, parse_target
from .pullthrough import Flight, PullThroughBackend, UpstreamError
from .run import make_backend, run_mirror, warm
from .sending import sendfile_body
from .server import MirrorServer

__all__ = [
    "Backend",
    "BadTarget",
    "BodyInterrupted",
    "BodySlice",
    "BodyWriter",
    "CannedResponse",
    "FileEntry",
    "Flight",
    "FolderBackend",
    "HashCache",
    "Hooks",
    "Limits",
    "MirrorServer",
    "PullThroughBackend",
    "RequestInfo",
    "Route",
    "Snapshot",
    "StoreBackend",
    "UpstreamError",
    "XetOptions",
    "git_blob_oid",
    "lfs_pointer",
    "make_backend",
    "parse_range",
    "parse_target",
    "resolve_target",
    "run_mirror",
    "sendfile_body",
    "warm",
]
