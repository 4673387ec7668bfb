"""The Open Inference Protocol's datatypes: checking tensor elements, and their binary layout.

Elements travel either as JSON (numbers, booleans, strings) or, with the binary tensor extension,
as raw little-endian bytes after the JSON header: fixed-size numbers packed, BOOL one byte each,
BYTES as a 4-byte little-endian length before each element. The standard library's `array` packs
and checks the numbers (an out-of-range INT8 or a float sent as INT64 is refused there), so the
protocol needs no numpy.
"""

from __future__ import annotations

import struct
import sys
from array import array
from typing import Any

from fermion.serving.http import HTTPError

#: Fixed-size numeric datatypes → `array` type codes (all little-endian on the wire).
NUMERIC = {
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "FP32": "f",
    "FP64": "d",
}
INTEGERS = frozenset(name for name in NUMERIC if "INT" in name)
FLOATS = frozenset({"FP16", "FP32", "FP64"})
DATATYPES = frozenset({*NUMERIC, "FP16", "BOOL", "BYTES"})
_SWAP = sys.byteorder == "big"


def bad_request(message: str) -> HTTPError:
    """A 400 in the protocol's error shape (`{"error": ...}`)."""
    return HTTPError(400, message)


def check_elements(name: str, datatype: str, values: list[Any]) -> list[Any]:
    """JSON elements of `datatype` as Python values (FP32/FP16 rounded to their precision); 400 on a wrong type."""
    if datatype == "BYTES":
        if not all(type(v) is str for v in values):
            raise bad_request(f"input {name!r} is BYTES: send its elements as JSON strings")
        return values
    if datatype == "BOOL":
        if not all(type(v) is bool for v in values):
            raise bad_request(f"input {name!r} is BOOL: send its elements as true or false")
        return values
    if any(type(v) is bool for v in values):
        raise bad_request(f"input {name!r} is {datatype}: send numbers, not true/false (or declare it BOOL)")
    if datatype == "FP16":
        try:
            return list(struct.unpack(f"<{len(values)}e", struct.pack(f"<{len(values)}e", *values)))
        except (struct.error, TypeError, OverflowError) as exc:
            raise bad_request(f"input {name!r} is FP16 and cannot hold these values ({exc})") from None
    try:
        return array(NUMERIC[datatype], values).tolist()
    except (TypeError, OverflowError) as exc:
        raise bad_request(f"input {name!r} is {datatype} and cannot hold these values ({exc})") from None


def element_size(datatype: str) -> int:
    """Bytes per element in the binary layout (BYTES: at least its 4-byte length)."""
    if datatype in NUMERIC:
        return array(NUMERIC[datatype]).itemsize
    return {"FP16": 2, "BOOL": 1, "BYTES": 4}[datatype]


def from_binary(name: str, datatype: str, data: bytes, count: int) -> list[Any]:
    """`count` elements from their binary layout; 400 when the bytes do not hold exactly that many."""
    if datatype == "BYTES":
        return _bytes_elements(name, data, count)
    size = element_size(datatype)
    if len(data) != count * size:
        raise bad_request(f"input {name!r} has {len(data)} bytes of binary data; {count} {datatype} elements take {count * size}")
    if datatype == "BOOL":
        return [byte != 0 for byte in data]
    if datatype == "FP16":
        return list(struct.unpack(f"<{count}e", data))
    values = array(NUMERIC[datatype])
    values.frombytes(data)
    if _SWAP:
        values.byteswap()
    return values.tolist()


def _bytes_elements(name: str, data: bytes, count: int) -> list[str]:
    elements, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(data):
            raise bad_request(f"input {name!r}: its binary BYTES data ends before element {len(elements) + 1} of {count}")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise bad_request(f"input {name!r}: BYTES element {len(elements) + 1} says {length} bytes, more than are left")
        try:
            elements.append(data[offset : offset + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise bad_request(f"input {name!r}: BYTES element {len(elements) + 1} is not UTF-8 text") from None
        offset += length
    if offset != len(data):
        raise bad_request(f"input {name!r}: {len(data) - offset} bytes of binary data are left after its {count} elements")
    return elements


def to_binary(datatype: str, values: list[Any]) -> bytes:
    """Elements in their binary layout (an answer's output with `binary_data`)."""
    if datatype == "BYTES":
        parts = []
        for value in values:
            encoded = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts += [struct.pack("<I", len(encoded)), encoded]
        return b"".join(parts)
    if datatype == "BOOL":
        return bytes(1 if v else 0 for v in values)
    if datatype == "FP16":
        return struct.pack(f"<{len(values)}e", *values)
    packed = array(NUMERIC[datatype], values)
    if _SWAP:
        packed.byteswap()
    return packed.tobytes()


def to_json(datatype: str, values: list[Any]) -> list[Any]:
    """Elements as they appear in a JSON answer: numbers rounded to their datatype, text as strings."""
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]
    if datatype == "BOOL":
        return [bool(v) for v in values]
    if datatype == "FP16":
        return list(struct.unpack(f"<{len(values)}e", struct.pack(f"<{len(values)}e", *values)))
    return array(NUMERIC[datatype], values).tolist()
