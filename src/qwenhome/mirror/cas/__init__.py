"""The mirror as its own Xet CAS (see :mod:`.service` and docs/xet.md, "The mirror as a CAS").

- ``records``: what is computed once per blob (file hash, recipe, xorb layouts), on disk;
- ``building``: the background thread that computes it;
- ``auth``: access tokens and signed xorb URLs;
- ``body``: xorb bytes made from the blob, single range or multipart;
- ``service``: the answers of the token route, the CAS and the xorb URLs.
"""

from .service import Answer, XetOptions, XetService

__all__ = ["Answer", "XetOptions", "XetService"]
