"""The Xet format: chunking, hashes, xorbs, reconstructions (see docs/xet.md)."""
