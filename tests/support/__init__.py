"""Test kit shared by every qwenhome test: generated repositories, a mirror
server with fault injection and a request log, and a CLI runner."""
