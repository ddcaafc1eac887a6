"""Fuzzing the packet parsers (C++ robot_rt._control.decode_packet and the Python mirror) with hypothesis.

Properties: no input crashes either decoder; both always report the same status; a corrupted valid packet
is never accepted; whatever is accepted is canonical (re-encoding it gives back the same bytes), so nothing
outside the specification gets through.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_protocol_codec import packets

from robot_rt import _control
from robot_rt.control import protocol as P

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
keys = st.sampled_from([None, b"fuzz-key"])


def _decode_both(data: bytes, key):
    status_cpp, packet_cpp = _control.decode_packet(data, key)
    status_py, packet_py = P.try_decode(data, key)
    assert status_cpp == status_py, (status_cpp, status_py, data.hex())
    assert status_cpp in P.STATUS_NAMES
    if status_cpp == "ok":
        assert P.encode(packet_py, key) == data  # canonical: nothing unspecified was accepted
        assert _control.encode_packet(packet_cpp, key) == data
    return status_cpp


@FUZZ
@given(st.binary(max_size=800), keys)
def test_random_bytes_never_crash_and_are_rejected(data, key):
    assert _decode_both(data, key) != "ok"


@FUZZ
@given(st.binary(min_size=36, max_size=760), keys)
def test_random_bytes_behind_a_valid_magic_are_rejected(tail, key):
    data = b"RRTP\x02" + tail[5:]
    assert _decode_both(data, key) != "ok"


@st.composite
def mutated(draw):
    key = draw(keys)
    packet = draw(packets())
    data = bytearray(P.encode(packet, key))
    original = bytes(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "byte", "truncate", "extend", "splice", "zero"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif op == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=40))
        elif op == "splice" and data:
            i = draw(st.integers(0, len(data) - 1))
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[i : i + len(chunk)] = chunk
        elif op == "zero" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i : i + draw(st.integers(1, 16))] = b"\0" * min(16, len(data) - i)
    return original, bytes(data), key


@FUZZ
@given(mutated())
def test_corrupted_valid_packets_are_never_accepted(case):
    original, data, key = case
    status = _decode_both(data, key)
    if data != original:
        assert status != "ok"
    else:
        assert status == "ok"


@st.composite
def sealed_garbage(draw):
    """Packets whose checksum (and tag) are valid but whose header/payload fields are arbitrary: this drives
    the fuzzer past the integrity checks into the payload parser."""
    key = draw(keys)
    rare = st.integers(0, 9).map(lambda v: v >= 8)  # True one time in five
    type_id = draw(st.integers(0, 9))
    count = draw(st.integers(0, 20))
    if draw(st.integers(0, 3).map(bool)):  # mostly in range, so the payload parser is reached
        count = min(count, 16)
    kinds = {1: 24, 2: 24, 3: 32 + 16 * count, 4: 8 + 16 * count, 5: 8 + 40 * count, 6: 64, 7: 8}
    size = kinds.get(type_id, draw(st.integers(0, 64)))
    if draw(st.booleans()):
        size = max(0, size + draw(st.integers(-9, 9)))
    payload = bytearray(draw(st.binary(min_size=size, max_size=size)))
    if len(payload) >= 2 and draw(st.booleans()):
        struct.pack_into("<H", payload, 0, count)
    if len(payload) >= 8 and not draw(rare):
        payload[4:8] = b"\0\0\0\0"  # reserved
    flags = draw(st.sampled_from([2, 0x8000])) if draw(rare) else 0
    reserved = 1 if draw(rare) else 0
    version = draw(st.sampled_from([0, 1, 3])) if draw(rare) else 2
    header = struct.pack(
        "<4sBBHIHHQQ",
        b"RRTP",
        version,
        type_id,
        flags,
        draw(st.integers(0, 2**32 - 1)),
        len(payload) & 0xFFFF,
        reserved,
        draw(st.integers(0, 2**64 - 1)),
        draw(st.integers(0, 2**64 - 1)),
    )
    tag_flag = P.FLAG_TAG if key else 0
    return P.seal(header + bytes(payload), key, flags=flags | tag_flag), key


@FUZZ
@given(sealed_garbage())
def test_parser_on_integrity_valid_garbage(case):
    data, key = case
    _decode_both(data, key)  # agreement + canonical-if-accepted are the assertions
