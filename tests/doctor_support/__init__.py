"""Real failures on 127.0.0.1 for the doctor's tests: a DNS server, sockets
that refuse, hang or never accept, and a small Hub-like HTTP(S) server."""
