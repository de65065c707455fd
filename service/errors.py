"""Domain errors. Each carries its HTTP status; one handler turns any of them into
``{"error": "..."}`` so every endpoint fails in the same shape."""

from __future__ import annotations

from collections.abc import Iterable


class ServiceError(Exception):
    """Base of every error the service reports to a client."""

    status_code: int = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ServiceError):
    status_code = 400


class NotFound(ServiceError):
    status_code = 404


class UnsupportedMediaType(ServiceError):
    status_code = 415


class PayloadTooLarge(ServiceError):
    status_code = 413


class Unprocessable(ServiceError):
    status_code = 422


class ModelFailed(ServiceError):
    """The model itself misbehaved (not the request): a server-side fault, said plainly."""

    status_code = 500


class ModelNotReady(ServiceError):
    status_code = 503


class Overloaded(ServiceError):
    """The model's queue is full: the client should come back shortly."""

    status_code = 503

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


def one_of(kind: str, wanted: str, valid: Iterable[object]) -> str:
    """The message for a name that is not among the valid ones, listing them."""
    names = ", ".join(str(v) for v in valid) or "(none)"
    return f"unknown {kind} {wanted!r}; valid: {names}"
