"""GS1 EPC Tag Data Standard (TDS): 96-bit EPC binary -> pure-identity URI.

Theory of operation: a 96-bit EPC (the EPC bank after the Gen2 PC word) is
``header(8) | filter(3) | partition(3) | company prefix (M bits) | reference
(N bits) | serial or reserved``. The header names the scheme; the partition
value P (0..6) says how the 44/58/82 bits after it split between the GS1
company prefix (12..6 digits) and the reference. The pure-identity URI is the
company prefix zero-padded to its digit count, then the reference zero-padded
to its digit count (GIAI: a plain integer), then the serial as a decimal
integer (TDS 1.13 §14.4 decoding procedure, §14.5 coding tables; summarised in
device-protocols.md §3.4).

Only SGTIN-96, SSCC-96, GRAI-96 and GIAI-96 are decoded: the GS1 keys a bag,
pallet or returnable container of ore carries. Anything else raises
``ProtocolError`` (a typed "not decodable", the caller keeps the raw hex).
Pure function, no state; the UHF parsers call it to fill ``TagRead.uri``.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware_bridge.errors import ProtocolError

__all__ = ["EPC96_BYTES", "Epc", "decode_epc", "epc_uri"]

EPC96_BYTES = 12

# TDS 1.13 §14.5: company-prefix bits M for partition P = 0..6 (12..6 digits).
# The same M column appears in every GS1 scheme's partition table.
_CP_BITS = (40, 37, 34, 30, 27, 24, 20)
_CP_DIGITS = (12, 11, 10, 9, 8, 7, 6)


@dataclass(frozen=True, slots=True)
class _Scheme:
    name: str  # TDS scheme name used in URIs, e.g. "sgtin"
    bits: int  # scheme size, e.g. 96
    partition_bits: int  # M + N: bits shared by company prefix and reference
    key_digits: int | None  # company prefix + reference digits; None = unpadded (GIAI)
    serial_bits: int  # 38 for SGTIN/GRAI; 0 for SSCC (24 reserved bits) and GIAI


# Header values (TDS 1.13 §14.2, Table 14-1) and partition tables (§14.5):
# SGTIN-96 P: (M, N) = (40,4)..(20,24), 13 digits CP + indicator/item reference.
# SSCC-96: (40,18)..(20,38), 17 digits CP + extension/serial reference, 24 reserved bits.
# GRAI-96: (40,4)..(20,24), 12 digits CP + asset type (0 digits when P = 0).
# GIAI-96: (40,42)..(20,62), individual asset reference an integer (no padding).
_SCHEMES: dict[int, _Scheme] = {
    0x30: _Scheme("sgtin", 96, 44, 13, 38),
    0x31: _Scheme("sscc", 96, 58, 17, 0),
    0x33: _Scheme("grai", 96, 44, 12, 38),
    0x34: _Scheme("giai", 96, 82, None, 0),
}

# Headers we recognise but do not decode, for a precise error (TDS Table 14-1).
_KNOWN_UNSUPPORTED = {
    0x00: "unprogrammed tag",
    0x2C: "GDTI-96",
    0x2D: "GSRN-96",
    0x2E: "GSRNP-96",
    0x32: "SGLN-96",
    0x35: "GID-96",
    0x36: "SGTIN-198",
    0x37: "GRAI-170",
    0x38: "GIAI-202",
    0x39: "SGLN-195",
    0x3A: "GDTI-113",
}


@dataclass(frozen=True, slots=True)
class Epc:
    """A decoded EPC: its fields as canonical digit strings, and its URIs."""

    scheme: str  # "sgtin" | "sscc" | "grai" | "giai"
    bits: int
    filter: int
    company_prefix: str
    reference: str  # item reference (with indicator), serial reference, asset type or asset ref
    serial: str | None  # SGTIN / GRAI serial (decimal, no leading zeros); else None

    @property
    def uri(self) -> str:
        """Pure-identity URI, e.g. ``urn:epc:id:sgtin:0614141.812345.6789`` (TDS §6)."""
        parts = [self.company_prefix, self.reference]
        if self.serial is not None:
            parts.append(self.serial)
        return f"urn:epc:id:{self.scheme}:{'.'.join(parts)}"

    @property
    def tag_uri(self) -> str:
        """Tag URI with binary scheme and filter, e.g. ``urn:epc:tag:sgtin-96:1.…`` (TDS §12)."""
        parts = [str(self.filter), self.company_prefix, self.reference]
        if self.serial is not None:
            parts.append(self.serial)
        return f"urn:epc:tag:{self.scheme}-{self.bits}:{'.'.join(parts)}"


def decode_epc(epc: bytes | str) -> Epc:
    """Decode a 96-bit EPC given as 12 bytes or 24 hex digits.

    Raises ``ProtocolError`` for a wrong length, an unknown or unsupported
    header, partition value 7, or a field whose value exceeds its digit count
    (TDS 1.13 §14.4: the decoded company prefix C and reference D must satisfy
    C < 10^L and D < 10^K, else the bits are not a valid encoding).
    """
    data = _as_bytes(epc)
    if len(data) != EPC96_BYTES:
        raise ProtocolError(f"only 96-bit EPCs are decoded, got {len(data) * 8} bits")
    header = data[0]
    scheme = _SCHEMES.get(header)
    if scheme is None:
        what = _KNOWN_UNSUPPORTED.get(header, "unknown header")
        raise ProtocolError(f"EPC header 0x{header:02X} not decodable ({what})")

    value = int.from_bytes(data, "big")
    pos = 8  # bits consumed from the most significant end

    def take(n: int) -> int:
        nonlocal pos
        pos += n
        return (value >> (scheme.bits - pos)) & ((1 << n) - 1)

    filter_value = take(3)
    partition = take(3)
    if partition > 6:
        # TDS §14.5 partition tables define P = 0..6 only.
        raise ProtocolError(f"invalid EPC partition value {partition} ({scheme.name})")
    cp_bits, cp_digits = _CP_BITS[partition], _CP_DIGITS[partition]
    company = take(cp_bits)
    reference = take(scheme.partition_bits - cp_bits)
    serial = take(scheme.serial_bits) if scheme.serial_bits else None
    # SSCC-96's trailing 24 bits are "reserved"; like epcpy we do not reject
    # non-zero values (the raw hex stays the tag id, so two tags never merge).

    if company >= 10**cp_digits:
        raise ProtocolError(f"EPC company prefix {company} exceeds {cp_digits} digits")
    if scheme.key_digits is None:
        ref_text = str(reference)  # GIAI-96: integer, no leading zeros (TDS §14.5 GIAI-96 table)
    else:
        ref_digits = scheme.key_digits - cp_digits
        if reference >= 10**ref_digits:
            raise ProtocolError(
                f"EPC {scheme.name} reference {reference} exceeds {ref_digits} digits"
            )
        # GRAI-96 with P = 0 has a 0-digit asset type: D must be 0, rendered "".
        ref_text = f"{reference:0{ref_digits}d}" if ref_digits else ""

    return Epc(
        scheme=scheme.name,
        bits=scheme.bits,
        filter=filter_value,
        company_prefix=f"{company:0{cp_digits}d}",
        reference=ref_text,
        serial=None if serial is None else str(serial),
    )


def epc_uri(epc: bytes | str) -> str | None:
    """The pure-identity URI, or ``None`` when the EPC is not decodable (never raises)."""
    try:
        return decode_epc(epc).uri
    except ProtocolError:
        return None


def _as_bytes(epc: bytes | str) -> bytes:
    if isinstance(epc, bytes):
        return epc
    text = epc.strip()
    if len(text) % 2 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ProtocolError(f"EPC is not hex: {epc!r}")
    return bytes.fromhex(text)
