"""Signed consumer requests: the canonical message, EIP-191 signing and recovery, and a client
interceptor that signs every call.

Every consumer call to the provider carries an `Authorization` (a nonce and a signature). The
signature is an EIP-191 `personal_sign` by the consumer's Ethereum key over this text:

    C2D signed request
    method: c2d.provider.v1.ComputeService.Start
    provider: 0x<the provider's address, lowercase>
    signer: 0x<the consumer's address, lowercase>
    nonce: 17
    request-sha256: <hex>

`request-sha256` is the sha256 of the request message with its `auth` field cleared, written in
protobuf's canonical JSON mapping (default JSON names, default values left out) and then serialized
by RFC 8785 (JSON Canonicalization Scheme: keys sorted by UTF-16 code units, no whitespace, numbers
as ECMAScript prints them). Any language with a protobuf JSON printer and a JCS library produces the
same bytes, so every argument of the call is bound, and a wallet shows the signer what it signs.

Nonces are integers from 1 to 2**53-1 (safe in JavaScript); the provider accepts a nonce only if it
is greater than the last one it accepted from the same address (see `GetNonce`). A millisecond clock
is a fine source.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import grpc
from eth_keys.datatypes import PrivateKey, Signature
from eth_keys.exceptions import BadSignature, ValidationError
from eth_utils import keccak
from google.protobuf import json_format
from google.protobuf.message import Message

MAX_NONCE = 2**53 - 1
SIGNATURE_HEADER = "C2D signed request"
# The provider's UNAUTHENTICATED message for a nonce that is not above the last accepted one starts
# with this, so that clients can sign again with a fresh nonce (the rejected call had no effect).
STALE_NONCE_PREFIX = "stale nonce"
# The fields that hold a request's signer, in the order they are looked for.
SIGNER_FIELDS = ("consumer_address", "publisher_address")


class SignatureError(ValueError):
    pass


# --- RFC 8785 -------------------------------------------------------------------------------------


def _jcs_number(value: float) -> str:
    if isinstance(value, bool):
        raise SignatureError("a boolean is not a number")
    if isinstance(value, int):
        value = float(value) if abs(value) > MAX_NONCE else value
        if isinstance(value, int):
            return str(value)
    if not math.isfinite(value):
        raise SignatureError("NaN and Infinity have no JSON form")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr() gives the shortest digits that round-trip, as ECMAScript's Number::toString does.
    digits_tuple = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digits_tuple.digits)).rstrip("0") or "0"
    exponent = int(digits_tuple.exponent) + (len(digits_tuple.digits) - len(digits))
    k = len(digits)
    n = k + exponent  # the value is 0.d1d2..dk * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        text = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if e > 0 else "-") + str(abs(e))
    return sign + text


def canonical_json(value: Any) -> str:
    """RFC 8785 serialization of a JSON value (dict, list, str, int, float, bool, None)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return _jcs_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return (
            "{"
            + ",".join(json.dumps(k, ensure_ascii=False) + ":" + canonical_json(value[k]) for k in keys)
            + "}"
        )
    raise SignatureError(f"{type(value).__name__} has no JSON form")


# --- the message ----------------------------------------------------------------------------------


def request_digest(request: Message) -> str:
    """sha256 hex of the request without its `auth`, in canonical JSON."""
    unsigned = type(request)()
    unsigned.CopyFrom(request)
    if "auth" in unsigned.DESCRIPTOR.fields_by_name:
        unsigned.ClearField("auth")
    try:
        as_json = json_format.MessageToDict(unsigned)
    except (json_format.Error, ValueError) as exc:
        raise SignatureError(f"the request has no canonical JSON form: {exc}") from None
    return hashlib.sha256(canonical_json(as_json).encode()).hexdigest()


def signed_text(method: str, provider: str, signer: str, nonce: int, digest: str) -> str:
    return (
        f"{SIGNATURE_HEADER}\n"
        f"method: {method}\n"
        f"provider: {provider.lower()}\n"
        f"signer: {signer.lower()}\n"
        f"nonce: {nonce}\n"
        f"request-sha256: {digest}"
    )


def method_name(full_method: str) -> str:
    """'/c2d.provider.v1.ComputeService/Start' -> 'c2d.provider.v1.ComputeService.Start'."""
    return full_method.strip("/").replace("/", ".")


# EIP-191 personal_sign, with eth_keys directly: eth_account, which wraps it, costs half a second
# of every process's start-up (the provider's restarts, every c2d command).


def _personal_message_hash(text: str) -> bytes:
    data = text.encode()
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data)


def _private_key(private_key: str | bytes) -> PrivateKey:
    raw = bytes.fromhex(private_key.removeprefix("0x")) if isinstance(private_key, str) else private_key
    return PrivateKey(raw)


def sign_text(private_key: str | bytes, text: str) -> str:
    """An EIP-191 personal_sign signature: r, s and v (27 or 28), as wallets make it."""
    signature = _private_key(private_key).sign_msg_hash(_personal_message_hash(text))
    return (
        "0x"
        + signature.r.to_bytes(32, "big").hex()
        + signature.s.to_bytes(32, "big").hex()
        + f"{signature.v + 27:02x}"
    )


def recover_signer(text: str, signature: str) -> str:
    """The lowercase address that signed `text`, or SignatureError."""
    raw = signature.removeprefix("0x")
    if len(raw) != 130:
        raise SignatureError("the signature must be 65 bytes as hex (r, s, v)")
    try:
        signature_bytes = bytes.fromhex(raw)
        r = int.from_bytes(signature_bytes[:32], "big")
        s = int.from_bytes(signature_bytes[32:64], "big")
        v = signature_bytes[64]
        parsed = Signature(vrs=(v - 27 if v in (27, 28) else v, r, s))
        public_key = parsed.recover_public_key_from_msg_hash(_personal_message_hash(text))
    except (ValueError, BadSignature, ValidationError) as exc:
        raise SignatureError(f"the signature does not verify: {exc}") from None
    return str(public_key.to_checksum_address()).lower()


def address_of(private_key: str | bytes) -> str:
    try:
        return str(_private_key(private_key).public_key.to_checksum_address()).lower()
    except (ValueError, ValidationError) as exc:
        raise ValueError(f"not a private key: {exc}") from None


def signer_of(request: Message) -> str:
    for name in SIGNER_FIELDS:
        if name in request.DESCRIPTOR.fields_by_name:
            return str(getattr(request, name)).lower()
    return ""


def sign_request(request: Message, method: str, provider: str, private_key: str | bytes, nonce: int) -> None:
    """Fills request.auth: the nonce and the signature over the canonical message."""
    text = signed_text(method, provider, signer_of(request), nonce, request_digest(request))
    auth = request.auth  # type: ignore[attr-defined]
    auth.nonce = nonce
    auth.signature = sign_text(private_key, text)


# --- a client that signs every call ---------------------------------------------------------------


class NonceClock:
    """Strictly increasing nonces from a millisecond clock; survives restarts of the client."""

    def __init__(self, now: Callable[[], float] = time.time):
        self._now = now
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, int(self._now() * 1000))
        return self._last


class _SigningBase:
    def __init__(self, keys: Mapping[str, str], provider: Callable[[], str] | str, attempts: int = 4):
        # address (lowercase) -> private key
        self._keys = {a.lower(): k for a, k in keys.items()}
        self._provider = provider
        self._clocks: dict[str, NonceClock] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._attempts = attempts

    def provider_address(self) -> str:
        return self._provider if isinstance(self._provider, str) else self._provider()

    def _key_for(self, request: Message) -> tuple[str, str] | None:
        if "auth" not in request.DESCRIPTOR.fields_by_name or request.HasField("auth"):
            return None  # not a signed call, or signed by the caller itself
        signer = signer_of(request)
        key = self._keys.get(signer)
        return (signer, key) if key else None

    def _signed(self, request: Message, method: str, signer: str, key: str) -> Message:
        copy = type(request)()
        copy.CopyFrom(request)
        nonce = self._clocks.setdefault(signer, NonceClock()).next()
        try:
            sign_request(copy, method_name(method), self.provider_address(), key, nonce)
        except SignatureError:
            # NaN or Infinity: nothing can sign it. Sent unsigned, it gets the provider's own
            # answer (INVALID_ARGUMENT), as any client would.
            copy.auth.nonce = nonce  # type: ignore[attr-defined]
        return copy


def _stale(code: grpc.StatusCode | None, details: str | None) -> bool:
    return code == grpc.StatusCode.UNAUTHENTICATED and (details or "").startswith(STALE_NONCE_PREFIX)


class SigningUnaryUnary(_SigningBase, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        found = self._key_for(request)
        if found is None:
            return await continuation(client_call_details, request)
        signer, key = found
        method = _method(client_call_details)
        for attempt in range(self._attempts):
            lock = self._locks.setdefault(signer, asyncio.Lock())
            async with lock:
                call = await continuation(client_call_details, self._signed(request, method, signer, key))
            code = await call.code()
            if attempt + 1 < self._attempts and _stale(code, await call.details()):
                continue  # overtaken by a later-signed call of ours; the rejected one had no effect
            return call
        return call


# How long a stream's authentication may hold up its signer's next call (see SigningUnaryStream).
STREAM_AUTH_WAIT_SECONDS = 2.0


class SigningUnaryStream(_SigningBase, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        found = self._key_for(request)
        if found is None:
            return await continuation(client_call_details, request)
        signer, key = found
        method = _method(client_call_details)
        for attempt in range(self._attempts):
            lock = self._locks.setdefault(signer, asyncio.Lock())
            async with lock:
                call = await continuation(client_call_details, self._signed(request, method, signer, key))
                # The provider sends its initial metadata as soon as it has authenticated the call
                # (or refused it). Waiting for it before the next call of this signer is signed keeps
                # streams opened at once from overtaking each other's nonces on their way in (many
                # Watch streams over several channels would otherwise be refused as stale, again and
                # again). Bounded, so that a slow provider cannot hold up this signer's other calls.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(call.initial_metadata()), STREAM_AUTH_WAIT_SECONDS)
            await call.initial_metadata()
            if (
                attempt + 1 < self._attempts
                and call.done()
                and _stale(await call.code(), await call.details())
            ):
                continue
            return call
        return call


def _method(details: Any) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else str(method)


def signing_interceptors(
    keys: Mapping[str, str], provider: Callable[[], str] | str
) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that sign each provider call whose signer is one of `keys` (address -> private
    key) and that is not signed already; a call overtaken by a later nonce is signed again."""
    return [SigningUnaryUnary(keys, provider), SigningUnaryStream(keys, provider)]
