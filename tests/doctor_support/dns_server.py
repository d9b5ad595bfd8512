"""A small DNS server on 127.0.0.1 (UDP, free port), built on dnspython.

``records`` maps names to addresses (A for IPv4, AAAA for IPv6); unknown
names get NXDOMAIN. ``mode="silent"`` never answers; ``"servfail"`` answers
SERVFAIL to everything.
"""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class DnsServer:
    def __init__(self, records: dict[str, list[str]] | None = None, mode: str = "answer") -> None:
        self.records = {k.rstrip(".").lower(): v for k, v in (records or {}).items()}
        self.mode = mode
        self.queries: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"``, as DoctorOptions.resolvers takes it."""
        return f"127.0.0.1:{self.port}"

    def _answer(self, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        self.queries.append(name)
        if self.mode == "silent":
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        if self.mode == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        if name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response.to_wire()
        want_v6 = question.rdtype == dns.rdatatype.AAAA
        ips = [ip for ip in self.records[name] if (":" in ip) == want_v6]
        if ips:
            rtype = "AAAA" if want_v6 else "A"
            response.answer.append(dns.rrset.from_text(question.name, 30, "IN", rtype, *ips))
        return response.to_wire()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                out = self._answer(wire)
            except Exception:  # a malformed query: ignore it, as a server would
                continue
            if out is not None:
                self._sock.sendto(out, peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self._sock.close()

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
