"""The canonical request text that consumers sign: RFC 8785 JSON, the digest, and EIP-191."""

from __future__ import annotations

import math

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from hypothesis import given
from hypothesis import strategies as st

from c2d.provider.v1 import request_response_pb2 as pb
from c2d_common.signing import (
    NonceClock,
    SignatureError,
    address_of,
    canonical_json,
    recover_signer,
    request_digest,
    sign_request,
    signed_text,
)

KEY = "0x" + "11" * 32


@pytest.mark.parametrize(
    ("value", "text"),
    [
        # RFC 8785, appendix B (ECMAScript number serialization).
        (0.0, "0"),
        (-0.0, "0"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (9007199254740992.0, "9007199254740992"),
        (9007199254740994.0, "9007199254740994"),
        (295147905179352830000.0, "295147905179352830000"),
        (1e21, "1e+21"),
        (1e23, "1e+23"),
        (0.000001, "0.000001"),
        (1e-7, "1e-7"),
        (333333333.3333333, "333333333.3333333"),
        (-1.5, "-1.5"),
        (1.0, "1"),
        (100.0, "100"),
        (123.456, "123.456"),
        (4.35, "4.35"),
        (0.1, "0.1"),
    ],
)
def test_numbers_print_as_ecmascript_does(value: float, text: str) -> None:
    assert canonical_json(value) == text


def test_rfc8785_example_object() -> None:
    value = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": '\u20ac$\u000f\nA\'B"\\\\"/',
        "literals": [None, True, False],
    }
    assert canonical_json(value) == (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )


def test_keys_sort_by_utf16_code_units() -> None:
    # U+FB33 sorts after U+1F600 in code points but before it in UTF-16 (surrogates are D800-DFFF).
    assert canonical_json({"\U0001f600": 1, "\ufb33": 2, "a": 3}) == '{"a":3,"\U0001f600":1,"\ufb33":2}'


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, object()])
def test_values_without_a_json_form_are_refused(bad: object) -> None:
    with pytest.raises(SignatureError):
        canonical_json(bad)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_finite_number_round_trips(value: float) -> None:
    assert float(canonical_json(value)) == value


def test_the_digest_ignores_auth_and_binds_every_argument() -> None:
    request = pb.StartRequest(consumer_address="0x" + "aa" * 20, dataset_did="did:op:" + "1" * 64)
    digest = request_digest(request)
    request.auth.nonce = 5
    request.auth.signature = "0x" + "00" * 65
    assert request_digest(request) == digest
    request.algorithm_parameters.update({"k": 1})
    assert request_digest(request) != digest


def test_the_signed_text_is_readable_and_binds_method_provider_signer_nonce() -> None:
    text = signed_text("c2d.provider.v1.ComputeService.Start", "0xAB", "0xCD", 7, "f" * 64)
    assert text.splitlines() == [
        "C2D signed request",
        "method: c2d.provider.v1.ComputeService.Start",
        "provider: 0xab",
        "signer: 0xcd",
        "nonce: 7",
        "request-sha256: " + "f" * 64,
    ]


def test_a_signed_request_recovers_its_signer_as_a_wallet_would_sign_it() -> None:
    request = pb.ListRequest(consumer_address=address_of(KEY), page_size=3)
    sign_request(request, "c2d.provider.v1.ComputeService.List", "0x" + "22" * 20, KEY, 9)
    text = signed_text(
        "c2d.provider.v1.ComputeService.List", "0x" + "22" * 20, address_of(KEY), 9, request_digest(request)
    )
    # Any EIP-191 personal_sign implementation gives the same signature for the same text.
    wallet = Account.sign_message(encode_defunct(text=text), private_key=KEY)
    assert request.auth.signature == "0x" + bytes(wallet.signature).hex()
    assert recover_signer(text, request.auth.signature) == address_of(KEY)


@pytest.mark.parametrize("signature", ["", "0x", "0x" + "00" * 64, "0x" + "gg" * 65, "0x" + "00" * 65])
def test_malformed_signatures_raise(signature: str) -> None:
    with pytest.raises(SignatureError):
        recover_signer("hello", signature)


def test_the_nonce_clock_strictly_increases_even_when_time_stands_still() -> None:
    clock = NonceClock(now=lambda: 1000.0)
    values = [clock.next() for _ in range(5)]
    assert values == [1_000_000, 1_000_001, 1_000_002, 1_000_003, 1_000_004]


def _signed_request_types() -> list[type]:
    from google.protobuf import symbol_database

    from c2d.provider.v1 import service_pb2

    types = []
    for service in service_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            if "auth" in method.input_type.fields_by_name:
                types.append(symbol_database.Default().GetSymbol(method.input_type.full_name))
    return types


def _set_some_value(message, field) -> None:  # type: ignore[no-untyped-def]
    """Gives `field` of `message` a value other than its default (one element if repeated)."""
    FD = field.__class__
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key_type = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        container = getattr(message, field.name)
        key = "k" if key_type.type == FD.TYPE_STRING else 1
        if value_field.message_type is not None:
            container[key].SetInParent()
        else:
            container[key] = "v" if value_field.type == FD.TYPE_STRING else 1
        return
    if field.message_type is not None:
        target = getattr(message, field.name)
        inner = target.add() if field.is_repeated else target
        if field.message_type.full_name == "google.protobuf.Struct":
            inner.update({"k": 1})
        elif field.message_type.full_name == "google.protobuf.Timestamp":
            inner.seconds = 1
        else:
            _set_some_value(inner, inner.DESCRIPTOR.fields[0])
        return
    value: object
    if field.type == FD.TYPE_STRING:
        value = "x"
    elif field.type == FD.TYPE_BYTES:
        value = b"x"
    elif field.type == FD.TYPE_BOOL:
        value = True
    elif field.type == FD.TYPE_ENUM:
        value = field.enum_type.values[-1].number
    elif field.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        value = 1.5
    else:
        value = 7
    if field.is_repeated:
        getattr(message, field.name).append(value)
    else:
        setattr(message, field.name, value)


@pytest.mark.parametrize("request_type", _signed_request_types(), ids=lambda t: t.DESCRIPTOR.name)
def test_the_digest_binds_every_field_of_every_signed_request(request_type: type) -> None:
    """Whatever argument an attacker changes in a signed request, the signature no longer holds:
    every field of every request that carries `auth` is part of the digest."""
    fields = [f for f in request_type.DESCRIPTOR.fields if f.name != "auth"]
    assert fields
    digest = request_digest(request_type())
    for field in fields:
        request = request_type()
        _set_some_value(request, field)
        assert request.ListFields(), field.name
        assert request_digest(request) != digest, f"{request_type.DESCRIPTOR.name}.{field.name} is not signed"


def test_every_consumer_request_is_signed() -> None:
    """Every provider request that names a consumer or publisher carries auth (GetNonce names an
    address but only reads its nonce, as GetAsset and GetEnvironments are public)."""
    from c2d.provider.v1 import service_pb2

    public = {"GetNonce", "GetAsset", "GetEnvironments"}
    for service in service_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            if method.name not in public:
                assert "auth" in method.input_type.fields_by_name, method.full_name
