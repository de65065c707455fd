"""Domain errors. Each carries its HTTP status and builds its message from what it is
about; one handler turns any of them into ``{"error": "..."}`` so every endpoint, v1 or
v2, fails in the same shape and with the same words for the same fault."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


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


class UnknownModel(NotFound):
    def __init__(self, name: str, valid: Iterable[str]) -> None:
        super().__init__(one_of("model", name, valid))


class UnknownVersion(NotFound):
    def __init__(self, name: str, version: int, valid: Iterable[int]) -> None:
        super().__init__(f"model {name} has no version {version}; valid: {', '.join(map(str, valid)) or '(none)'}")


class UnknownLayer(NotFound):
    def __init__(self, model: str, layer: str, valid: Iterable[str]) -> None:
        super().__init__(one_of("layer", layer, valid) + f" (model {model})")


class NoFilters(NotFound):
    """A layer with no kernels of its own (a ReLU, a pool): its channels come from the layer
    before it."""

    def __init__(self, model: str, layer: str, with_filters: Iterable[str]) -> None:
        super().__init__(
            f"layer {layer!r} of model {model} has no filters of its own (it is not a conv layer: each of "
            f"its channels comes from the layer before it); layers with filters: "
            f"{', '.join(with_filters) or '(none)'}"
        )


class NotQuantized(NotFound):
    """A float32 version asked for its quantization: only int8 versions have one."""

    def __init__(self, model: str, version: int, int8_versions: Sequence[int]) -> None:
        if int8_versions:
            which = f"its int8 versions: {', '.join(map(str, int8_versions))}"
        else:
            which = f"it has no int8 version (python -m model_export quantize <repository>/{model} makes one)"
        super().__init__(f"model {model} version {version} is float32: it has no quantization record; {which}")


class ModelFailed(ServiceError):
    """The served model (or the server's replay of part of it) misbehaved: a server-side
    fault, said plainly, never blamed on the request."""

    status_code = 500


class ArtifactChanged(ModelFailed):
    """A served version's file was rewritten in place after load, and the request needed to
    read it (weights mapped from it, filters read on first view): what it would read is no
    longer what the version was loaded and checked with."""

    def __init__(self, model: str, version: int, filename: str) -> None:
        super().__init__(
            f"model {model} version {version}: its {filename} changed on disk after the version was "
            f"loaded, and this request reads it; load the version again "
            f"(POST /v2/repository/models/{model}/load) to serve it from the new file"
        )


class ModelOutputNotFinite(ModelFailed):
    """The model itself produced NaN or infinity: a fault of the served model, not of the
    request. 500 on every path (v1 and v2, JSON and binary, class scores and feature maps),
    so a client never mistakes it for its own error and no encoding hides it."""

    def __init__(self, model: str, version: int, outputs: Sequence[str]) -> None:
        super().__init__(
            f"model {model} version {version} produced NaN or infinite values in "
            f"{', '.join(outputs)}: the model is faulty (its weights or its graph), not the request"
        )


class Unauthorized(ServiceError):
    """No API key, or one the server does not know: 401 with the challenge RFC 6750 asks for.
    The message never repeats what the client sent."""

    status_code = 401

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        challenge = 'Bearer realm="convscope"' + (', error="invalid_token"' if invalid_token else "")
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class Forbidden(ServiceError):
    """A known key without the scope this call needs, or a call that is switched off."""

    status_code = 403


class ShuttingDown(ServiceError):
    """The server is draining before it exits: the client should go to another replica."""

    status_code = 503

    def __init__(self) -> None:
        super().__init__("the server is shutting down; retry (another replica will answer)",
                         headers={"Retry-After": "1", "Connection": "close"})


class LoadFailed(ServiceError):
    """A load through the repository API that left a version failed (Triton answers 400)."""

    status_code = 400
