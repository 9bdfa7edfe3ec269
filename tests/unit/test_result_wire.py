"""GetResultResponse written and read by hand (c2d_common.result_wire) is protobuf's own encoding:
what the provider sends parses as the message in any client, and what any protobuf encoder sends
reads the same here."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from c2d.common.v1 import job_pb2
from c2d.provider.v1 import request_response_pb2 as pb
from c2d_common.result_wire import MalformedPiece, decode_piece, encode_piece, serialize_response

FILES = st.none() | st.builds(
    lambda name, size, sha: job_pb2.ResultFile(
        name=name, kind=job_pb2.RESULT_KIND_OUTPUT, size=size, sha256=sha
    ),
    st.text(max_size=40),
    st.integers(0, 2**40),
    st.text("0123456789abcdef", min_size=64, max_size=64),
)


@given(st.integers(0, 2**62), st.binary(max_size=5000), FILES)
def test_what_the_provider_sends_is_the_protobuf_message(
    offset: int, data: bytes, file: job_pb2.ResultFile | None
) -> None:
    raw = encode_piece(offset, data, file)
    parsed = pb.GetResultResponse.FromString(raw)
    assert (parsed.offset, parsed.data) == (offset, data)
    assert parsed.HasField("file") == (file is not None)
    if file is not None:
        assert parsed.file == file


@given(st.integers(0, 2**62), st.binary(max_size=5000), FILES)
def test_what_any_encoder_sends_reads_the_same_without_copying(
    offset: int, data: bytes, file: job_pb2.ResultFile | None
) -> None:
    message = pb.GetResultResponse(offset=offset, data=data)
    if file is not None:
        message.file.CopyFrom(file)
    raw = message.SerializeToString()
    piece = decode_piece(raw)
    assert (piece.offset, bytes(piece.data)) == (offset, data)
    assert piece.file == (file if file is not None else None)
    assert piece.HasField("file") == (file is not None)
    assert serialize_response(message) == raw and serialize_response(raw) is raw


def test_unknown_fields_are_skipped_as_protobuf_skips_them() -> None:
    known = pb.GetResultResponse(offset=7, data=b"abc").SerializeToString()
    # field 9 varint 1, field 10 fixed64, field 11 fixed32, field 12 bytes "zz"
    unknown = b"\x48\x01" + b"\x51" + b"\0" * 8 + b"\x5d" + b"\0" * 4 + b"\x62\x02zz"
    piece = decode_piece(unknown + known)
    assert (piece.offset, bytes(piece.data)) == (7, b"abc")


@pytest.mark.parametrize(
    "raw",
    [b"\x1a\x05ab", b"\x10\xff", b"\x1a", b"\x0b", b"\x10" + b"\xff" * 11],
    ids=["data-past-end", "varint-past-end", "length-missing", "group-wire-type", "varint-too-long"],
)
def test_a_malformed_piece_is_refused(raw: bytes) -> None:
    with pytest.raises(MalformedPiece):
        decode_piece(raw)
