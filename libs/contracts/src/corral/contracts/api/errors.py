"""The Anthropic error envelope, and the one exception type that carries it between services."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel

ErrorType = Literal[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "conflict_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
    "timeout_error",
]

#: HTTP status for each error type Corral emits.
STATUS_FOR: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

BUS_UNANSWERED: Final = "bus_unanswered"
"""``error_code`` of an error reply saying the bus did not answer the service in time (NATS paused or
restarting, a stream electing a leader): whether the write was applied is unknown, and the same
request retried shortly (with the same ``Idempotency-Key``) is applied at most once. The gateway
answers it with a 503 and ``retry-after``."""


class ErrorDetail(BaseModel):
    type: str
    message: str
    details: dict[str, str] | None = None


class ErrorBody(BaseModel):
    """``{"type":"error","error":{"type":...,"message":...},"request_id":...}``."""

    type: Literal["error"] = "error"
    error: ErrorDetail
    request_id: str | None = None


class ApiError(Exception):
    """A failure the client should see as an Anthropic error body with ``status``.

    Raised by session-store handlers and carried back over the bus; the gateway turns it into
    the HTTP response. ``message`` says what went wrong and, where it can, what to do next.
    """

    def __init__(self, error_type: ErrorType, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.error_type: ErrorType = error_type
        self.message = message
        self.error_code = error_code

    @property
    def status(self) -> int:
        return STATUS_FOR[self.error_type]

    def detail(self) -> ErrorDetail:
        details = {"error_code": self.error_code} if self.error_code else None
        return ErrorDetail(type=self.error_type, message=self.message, details=details)

    @classmethod
    def from_detail(cls, detail: ErrorDetail) -> ApiError:
        known = detail.type if detail.type in STATUS_FOR else "api_error"
        code = detail.details.get("error_code") if detail.details else None
        return cls(known, detail.message, error_code=code)  # type: ignore[arg-type]


def not_found(kind: str, object_id: str) -> ApiError:
    return ApiError("not_found_error", f"{kind} {object_id!r} was not found", error_code=f"{kind}_not_found")


def conflict(message: str, *, error_code: str | None = None) -> ApiError:
    return ApiError("conflict_error", message, error_code=error_code)


def invalid(message: str, *, error_code: str | None = None) -> ApiError:
    return ApiError("invalid_request_error", message, error_code=error_code)
