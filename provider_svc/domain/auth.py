"""Who sent a request: its EIP-191 signature over the canonical request text, and a fresh nonce.

The rules, each with its own answer:
- no Authorization, a malformed signature, or one by another key than the named signer's (which
  also catches any argument changed after signing): UNAUTHENTICATED;
- a nonce not above the last one accepted from the signer (a replay, or a stale signature):
  UNAUTHENTICATED, with a message starting "stale nonce" so that a client may sign again.
Nonces are stored durably (the ledger) before the request does anything. Ocean's provider compares
nonces loosely and its operator ignores them; here each one is used at most once.
"""

from __future__ import annotations

import asyncio
import zlib

from google.protobuf.message import Message

from c2d_common.errors import InvalidArgument, Unauthenticated
from c2d_common.signing import (
    MAX_NONCE,
    STALE_NONCE_PREFIX,
    SignatureError,
    recover_signer,
    request_digest,
    signed_text,
)
from provider_svc.infra.ledger import Ledger

# Nonce checks of one address run one at a time, in the order the requests arrived (asyncio locks
# are fair); striped so that memory does not grow with the number of addresses.
LOCK_STRIPES = 256


class Authenticator:
    def __init__(self, ledger: Ledger, provider_address: str):
        self.ledger = ledger
        self.provider_address = provider_address.lower()
        self._locks = [asyncio.Lock() for _ in range(LOCK_STRIPES)]

    async def authenticate(self, method: str, request: Message, signer: str) -> str:
        """The signer's address (lowercase) once the request is proven to come from it and its
        nonce is spent; otherwise Unauthenticated."""
        if not request.HasField("auth"):
            raise Unauthenticated(
                f"this call must be signed by {signer}: set auth (nonce and signature); "
                "see docs/signed-requests.md"
            )
        auth = request.auth  # type: ignore[attr-defined]
        if not 0 < auth.nonce <= MAX_NONCE:
            raise InvalidArgument(f"auth.nonce must be 1 to {MAX_NONCE}")
        try:
            digest = request_digest(request)
        except SignatureError:
            raise InvalidArgument(
                "the request holds NaN or Infinity, which its canonical JSON (and so its signature) "
                "cannot carry"
            ) from None
        text = signed_text(method, self.provider_address, signer, auth.nonce, digest)
        try:
            recovered = recover_signer(text, auth.signature)
        except SignatureError as exc:
            raise Unauthenticated(f"auth.signature is not valid: {exc}") from None
        if recovered != signer:
            raise Unauthenticated(
                f"the signature is not by {signer}: sign with that address's key, over this request "
                f"as sent (method {method}, provider {self.provider_address}, nonce {auth.nonce}); "
                "a request changed after signing fails this way too"
            )
        async with self._locks[zlib.crc32(signer.encode()) % LOCK_STRIPES]:
            last = await self.ledger.accept_nonce(signer, auth.nonce)
        if last is not None:
            raise Unauthenticated(
                f"{STALE_NONCE_PREFIX}: {auth.nonce} is not above the last nonce accepted from {signer} "
                f"({last}); sign again with a greater nonce (GetNonce tells the last one)"
            )
        return signer
