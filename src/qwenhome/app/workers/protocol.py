"""Messages between the API process and an engine worker: length-prefixed
pickles on a Unix socket pair.

Both ends are this package, started by the same user from the same
installation, so pickle carries dataclasses and bytes (image uploads, PNGs)
without a schema of its own; nothing else ever speaks on the socket.

    API -> worker   {"op": "generate", "id": n, ...}           {"op": "cancel", "id": n}
    worker -> API   {"event": "ready", "info": {...}}          {"event": "failed", "error": {...}}
                    {"id": n, ...progress}                     {"id": n, "end": "done"|"error"|"cancelled", ...}
"""

from __future__ import annotations

import pickle
import socket
import struct
import threading
from collections import deque
from typing import Any

HEADER = struct.Struct("!Q")
Message = dict[str, Any]


class Decoder:
    """Messages out of bytes as they arrive: the one framing of both of a
    channel's readers (:meth:`Channel.recv` blocking, :meth:`Channel.recv_ready`
    on an event loop)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out = []
        while len(self._buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buf)
            end = HEADER.size + size
            if len(self._buf) < end:
                break
            with memoryview(self._buf) as view:  # (released before the buffer shrinks)
                out.append(pickle.loads(view[HEADER.size:end]))
            del self._buf[:end]
        return out


class Channel:
    """One end of the socket: :meth:`send` from any thread, :meth:`recv` from one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._decoder = Decoder()
        self._ready: deque[Message] = deque()

    def send(self, msg: Message) -> None:
        """Raises OSError when the other end is gone."""
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        with self._send_lock:  # one write: the reader wakes once per message
            self.sock.sendall(HEADER.pack(len(data)) + data)

    def recv(self) -> Message | None:
        """The next message, or None once the other end closed (or died)."""
        while not self._ready:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                return None
            if not data:
                return None
            self._ready.extend(self._decoder.feed(data))
        return self._ready.popleft()

    def recv_ready(self) -> list[Message] | None:
        """The messages the socket's bytes complete now, without waiting (none
        yet: an empty list), or None once the other end closed. For a reader
        on an event loop: the socket stays blocking for :meth:`send` from
        other threads."""
        try:
            data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            return None
        return self._decoder.feed(data) if data else None

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
