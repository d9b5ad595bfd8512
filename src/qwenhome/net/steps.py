"""The steps of a connection, one function each: resolve, connect TCP,
tunnel through a proxy, wrap in TLS, and a one-off request on a connected
socket. The transport and the event loop are built from them; the reachability
probe and the doctor call them one by one, so that they can tell which step
failed. They raise the socket's, ssl's and http.client's own exceptions: a
caller that reports a failure (the doctor, with a fix per step) classifies
them itself, and the rest hand them to :func:`qwenhome.net.translate.translate`.
"""

from __future__ import annotations

import errno
import http.client
import os
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from .head import MAX_HEAD
from .ranges import parse_count

Address = tuple[int, tuple[Any, ...]]  # a socket family and an address in it: (AF_INET, (ip, port))
Resolver = Callable[..., Any]  # socket.getaddrinfo's signature


def resolve(host: str, port: int, *, resolver: Resolver = socket.getaddrinfo) -> list[Address]:
    """The addresses of ``host:port`` for TCP, in the resolver's order (the
    system's preference: IPv6 or IPv4 first). Blocking; raises
    ``socket.gaierror`` when the name does not resolve."""
    infos = resolver(host, port, type=socket.SOCK_STREAM)
    return [(socket.AddressFamily(info[0]), tuple(info[4])) for info in infos]


def connect_tcp(address: Address, timeout: float) -> socket.socket:
    """A blocking TCP connection to ``address`` within ``timeout`` seconds
    (then ``TimeoutError``); the socket keeps that time-out for later reads."""
    family, sockaddr = address
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(sockaddr)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # requests go out at once
    except BaseException:
        sock.close()
        raise
    return sock


def connect_first(addresses: list[Address], timeout: Callable[[], float]) -> socket.socket:
    """A connection to the first of ``addresses`` that accepts one, each try
    bounded by what ``timeout()`` says is left; the last failure otherwise."""
    last: OSError = OSError(errno.EADDRNOTAVAIL, "no address to connect to")
    for address in addresses:
        try:
            return connect_tcp(address, timeout())
        except OSError as exc:
            last = exc
    raise last


def start_connect(address: Address) -> socket.socket:
    """A non-blocking socket whose TCP connect to ``address`` has begun: it is
    writable once connected (then read ``SO_ERROR``). Raises ``OSError`` when
    the connect fails at once."""
    family, sockaddr = address
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    err = sock.connect_ex(sockaddr)
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(err, os.strerror(err))
    return sock


def wrap_tls(sock: socket.socket, context: ssl.SSLContext, host: str, *, handshake: bool = True) -> ssl.SSLSocket:
    """TLS over a connected socket, the certificate checked against ``host``
    (also sent as SNI). ``handshake=False`` for a non-blocking socket: the
    caller drives ``do_handshake`` as the socket becomes ready."""
    return context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=handshake)


def read_head_bytes(sock: socket.socket, *, first_line_only: bool = False) -> bytes:
    """What a peer sends up to the end of its response head (or its first
    line), at most about :data:`MAX_HEAD` bytes; less if it closes first."""
    end = b"\r\n" if first_line_only else b"\r\n\r\n"
    data = b""
    while end not in data and len(data) <= MAX_HEAD:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def tunnel(sock: socket.socket, host: str, port: int,
           headers: Mapping[str, str] | None = None) -> tuple[int | None, str]:
    """Ask the HTTP proxy ``sock`` is connected to for a tunnel (``CONNECT``)
    to ``host:port``: the status of its answer (None when it is not HTTP)
    and its status line ("" when it closed). The tunnel is open when the
    status is 200; the caller decides what anything else means."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    line = read_head_bytes(sock).split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = line.split(None, 2)
    status = parse_count(parts[1]) if len(parts) >= 2 and parts[0].startswith("HTTP/") else None
    return status, line


def exchange(sock: socket.socket, method: str, target: str, headers: Mapping[str, str], *,
             body_limit: int) -> tuple[int, str, http.client.HTTPMessage, bytes]:
    """One request on a connected socket (its time-out set by the caller):
    status, reason, headers and up to ``body_limit`` bytes of the body. The
    connection is closed afterwards. ``headers`` must include ``Host``."""
    conn = http.client.HTTPConnection("localhost")  # (never dials: the socket is given)
    conn.sock = sock
    try:
        conn.request(method, target, headers=dict(headers))
        resp = conn.getresponse()
        body = b"" if method == "HEAD" else resp.read(body_limit)
        return resp.status, resp.reason, resp.msg, body
    finally:
        conn.close()
