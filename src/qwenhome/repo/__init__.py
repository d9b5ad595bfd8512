"""The bottom layer: what a repository is, independent of where it comes from
or where it is kept.

- :mod:`.ref`: :class:`~.ref.RepoRef` and the validators every revision, blob
  name and file path from outside passes;
- :mod:`.manifest`: the files a snapshot holds (:class:`~.manifest.Manifest`,
  :class:`~.manifest.RepoFile`) and the commit id derived from a listing;
- :mod:`.hashing`: the hashes that name and verify content
  (:class:`~.hashing.Verifier`).

It imports nothing of qwenhome but :mod:`qwenhome.errors`; the store, the
sources (``hub``) and the transfer build on it. Import from the modules: this
package re-exports nothing, so that ``qwenhome path`` does not load hashlib.
"""
