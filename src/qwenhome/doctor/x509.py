"""Issuer and subject of a DER certificate, without a crypto library.

The doctor shows who signed the certificate a server presented when
verification fails, which is how an intercepting proxy becomes visible.
Only the few DER structures on the way to the two Names are decoded.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_OID_NAMES = {
    "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST",
    "2.5.4.10": "O", "2.5.4.11": "OU", "1.2.840.113549.1.9.1": "emailAddress",
}


def _read_tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the element at ``pos``."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    end = pos + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, pos, end


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, vstart, vend = _read_tlv(data, pos)
        out.append((tag, vstart, vend))
        pos = vend
    return out


def _oid(raw: bytes) -> str:
    parts = [raw[0] // 40, raw[0] % 40]
    value = 0
    for byte in raw[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(str(p) for p in parts)


def _name(data: bytes, start: int, end: int) -> str:
    items = []
    for _, set_start, set_end in _children(data, start, end):
        for _, seq_start, seq_end in _children(data, set_start, set_end):
            (_, os_, oe), (vtag, vs, ve) = _children(data, seq_start, seq_end)[:2]
            key = _OID_NAMES.get(_oid(data[os_:oe]), _oid(data[os_:oe]))
            raw = data[vs:ve]
            value = raw.decode("utf-16-be" if vtag == 0x1E else "utf-8", errors="replace")
            items.append(f"{key}={value}")
    return ", ".join(items)


def issuer_and_subject(der: bytes) -> tuple[str, str]:
    """``("O=Corp Proxy, CN=Corp CA", "CN=huggingface.co")``; ``("?", "?")`` if unreadable."""
    try:
        _, cs, ce = _read_tlv(der, 0)
        _, ts, te = _children(der, cs, ce)[0]
        fields = _children(der, ts, te)
        if fields and fields[0][0] == 0xA0:  # explicit [0] version
            fields = fields[1:]
        # serialNumber, signature, issuer, validity, subject
        _, is_, ie = fields[2]
        _, ss, se = fields[4]
        return _name(der, is_, ie) or "?", _name(der, ss, se) or "?"
    except (IndexError, ValueError) as exc:
        log.debug("certificate names not parsed: %r", exc)
        return "?", "?"
