"""Domain errors, and their one mapping to gRPC status codes.

Domain code raises these and knows nothing of gRPC; `DomainErrorInterceptor` turns them into the
status code that fits. Anything else that escapes a handler is a bug: logged, answered INTERNAL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import structlog

from c2d_common.interceptors import HandlerWrappingInterceptor, Stream, Unary

log = structlog.get_logger(__name__)


class DomainError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class OutOfRange(DomainError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unavailable(DomainError):
    """A service this one depends on cannot be reached; the client may retry."""

    code = grpc.StatusCode.UNAVAILABLE


_PASS_THROUGH = (grpc.aio.AbortError, grpc.aio.UsageError)
_TRANSPORT_FAILURES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}
_DOWNSTREAM_BUGS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED}


class _Undecodable:
    """What a request that does not parse becomes, so that its handler can answer INVALID_ARGUMENT
    (gRPC itself answers UNKNOWN when a deserializer raises)."""

    def __init__(self, error: Exception):
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, or RecursionError on absurd nesting
            return _Undecodable(exc)

    return deserialize


async def _reject_undecodable(request: Any, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, _Undecodable):
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a valid message of this method: {request.error}",
        )


async def _abort_for(exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
    if isinstance(exc, DomainError):
        await context.abort(exc.code, str(exc))
    if isinstance(exc, grpc.aio.AioRpcError):
        # A downstream service answered with a status. Its own domain answers (bad page token, no
        # such job) are meant for the caller and pass on; transport failures and bugs there carry
        # internal addresses and details, which stay in this log.
        code = exc.code()
        if code in _TRANSPORT_FAILURES:
            log.warning("backing service unavailable", method=method, code=code.name, details=exc.details())
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "a backing service is unavailable; try again shortly"
            )
        if code in _DOWNSTREAM_BUGS:
            log.error("backing service failed", method=method, code=code.name, details=exc.details())
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")
        await context.abort(code, exc.details() or code.name)
    log.exception("unhandled error in handler", method=method)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")


class DomainErrorInterceptor(HandlerWrappingInterceptor):
    def wrap_deserializer(self, deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        return _tolerant(deserializer)

    def wrap_unary(self, method: str, inner: Unary) -> Unary:
        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await _reject_undecodable(request, context)
            try:
                return await inner(request, context)
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                await _abort_for(exc, context, method)

        return unary_unary

    def wrap_stream(self, method: str, inner: Stream) -> Stream:
        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await _reject_undecodable(request, context)
            try:
                async for item in inner(request, context):
                    yield item
            except _PASS_THROUGH:
                raise
            except Exception as exc:
                await _abort_for(exc, context, method)

        return unary_stream
