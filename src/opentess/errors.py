"""The domain's exception tree. Each error carries its HTTP status; one handler per wire format
(native Tess JSON, OpenAI's error object) renders them at the edge."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class OpentessError(Exception):
    """Base of every error the API answers on purpose."""

    status = 500
    error = "Server error"  # short name, the native shape's ``error`` field
    openai_type = "server_error"
    # the status on the OpenAI-compatible route, where field errors are 400s as in OpenAI's API
    openai_status: int | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class Unauthenticated(OpentessError):
    status = 401
    error = "Unauthenticated"
    openai_type = "invalid_request_error"


class Forbidden(OpentessError):
    status = 403
    error = "Forbidden"
    openai_type = "invalid_request_error"


class NotFound(OpentessError):
    status = 404
    error = "Not found"
    openai_type = "invalid_request_error"


class AgentNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Agent not found")


class ExecutionNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Agent response not found")


class TokenNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Token not found")


class Conflict(OpentessError):
    """The resource is in a state that forbids the request (an inactive agent, a finished run)."""

    status = 409
    error = "Conflict"
    openai_type = "invalid_request_error"


class BadRequest(OpentessError):
    """The request is well-formed JSON but cannot be served as asked (OpenAI route: 400)."""

    status = 400
    error = "Bad request"
    openai_type = "invalid_request_error"


class InvalidInput(OpentessError):
    """Field validation failed; carries Laravel's per-field map (native routes: 422)."""

    status = 422
    error = "Validation failed"
    openai_type = "invalid_request_error"
    openai_status = 400

    def __init__(self, errors: dict[str, list[str]]) -> None:
        first_field, first_messages = next(iter(errors.items()))
        message = first_messages[0]
        extra = sum(len(v) for v in errors.values()) - 1
        if extra:
            message += f" (and {extra} more error{'s' if extra > 1 else ''})"
        super().__init__(message, param=first_field)
        self.errors = errors


class PayloadTooLarge(OpentessError):
    status = 413
    error = "Payload too large"
    openai_type = "invalid_request_error"


class UpstreamError(OpentessError):
    """The model backend failed (connection refused, HTTP error, malformed stream)."""

    status = 502
    error = "Upstream error"
    openai_type = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    error = "Upstream timeout"
    openai_type = "upstream_timeout"


class StillRunning(OpentessError):
    """Something was asked to stop and did not within its time."""

    status = 504
    error = "Timeout"
    openai_type = "timeout"


class ModelError(OpentessError):
    """The local model failed to load or to generate."""

    status = 500
    error = "Model error"
    openai_type = "server_error"


class ServiceUnavailable(OpentessError):
    status = 503
    error = "Service unavailable"
    openai_type = "server_error"


def parse_model(model: type[M], data: Any) -> M:
    """Validate ``data`` as ``model``; InvalidInput with Laravel-style field errors otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for err in exc.errors():
            errors.setdefault(".".join(str(p) for p in err["loc"]) or "body", []).append(err["msg"])
        raise InvalidInput(errors) from exc
