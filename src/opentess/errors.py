"""The domain's exception tree. Each error carries its HTTP status; one renderer per wire format
(native Tess JSON, OpenAI's error object: opentess.api.errors) turns them into answers at the
edge. Driver, SDK and library errors are translated where they are caught (``raise … from``).

::

    OpentessError                       500  base of every error answered on purpose
    ├── Unauthenticated                 401
    ├── Forbidden                       403
    ├── NotFound                        404
    │   ├── AgentNotFound
    │   ├── ExecutionNotFound
    │   ├── TokenNotFound
    │   ├── FileNotFound                        (opentess.files)
    │   ├── MemoryNotFound, CollectionNotFound  (opentess.memories)
    │   └── WebhookNotFound                     (opentess.webhooks)
    ├── Conflict                        409  the resource's state forbids it (inactive agent, …)
    │   └── ExecutionCancelled          409  a run stopped on request while its caller waited
    ├── BadRequest                      400  well-formed, but cannot be served as asked
    ├── InvalidInput                    422  per-field errors (400 on the OpenAI route)
    │   ├── InvalidHeader               422  on every route, the OpenAI one included
    │   └── TemplateProblem             422  the instructions cannot be rendered
    ├── PayloadTooLarge                 413
    ├── RateLimited                     429  with retry_after
    ├── UpstreamError                   502  the model backend failed
    │   └── UpstreamTimeout             504
    ├── ExecutionTimedOut               504  a run longer than its time limit
    ├── StillRunning                    504  asked to stop, did not in time
    ├── ModelError                      500  a local model failed to load or generate
    ├── ServiceUnavailable              503
    └── HTTPProblem                     any  a framework-level answer (404 route, 405 method)
"""

from __future__ import annotations

import math
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


class FileNotFound(NotFound):
    def __init__(self, message: str = "File not found") -> None:
        super().__init__(message)


class MemoryNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Memory not found")


class CollectionNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Collection not found")


class WebhookNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Webhook not found")


class Conflict(OpentessError):
    """The resource is in a state that forbids the request (an inactive agent, a finished run)."""

    status = 409
    error = "Conflict"
    openai_type = "invalid_request_error"


CANCELLED_BY_REQUEST = "cancelled by request"


class ExecutionCancelled(Conflict):
    """A run stopped on purpose (by request, or the server shutting down) while its caller waited."""

    error = "Cancelled"
    openai_type = "cancelled"

    def __init__(self, reason: str = CANCELLED_BY_REQUEST) -> None:
        super().__init__("The run was cancelled" if reason == CANCELLED_BY_REQUEST else f"The run was {reason}")


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


class InvalidHeader(InvalidInput):
    """A malformed header stays 422 on every route, the OpenAI-compatible one included."""

    openai_status = 422


class TemplateProblem(InvalidInput):
    """An agent's instructions cannot be rendered (syntax, a runtime error, a limit): a field
    error on ``instructions``."""

    def __init__(self, detail: str, kind: str) -> None:
        super().__init__({"instructions": [f"The agent's instructions could not be rendered: {detail}"]})
        self.detail = detail
        self.kind = kind  # "syntax" | "runtime" | "limit" | "memory"


class PayloadTooLarge(OpentessError):
    status = 413
    error = "Payload too large"
    openai_type = "invalid_request_error"


class RateLimited(OpentessError):
    status = 429
    error = "Rate limit exceeded"
    openai_type = "rate_limit_error"

    def __init__(self, retry_after: float, what: str) -> None:
        super().__init__("Rate limit exceeded", code="rate_limit_exceeded")
        self.retry_after = max(1, math.ceil(retry_after))
        self.what = what


class UpstreamError(OpentessError):
    """The model backend failed (connection refused, HTTP error, malformed stream)."""

    status = 502
    error = "Upstream error"
    openai_type = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    error = "Upstream timeout"
    openai_type = "upstream_timeout"


class ExecutionTimedOut(OpentessError):
    status = 504
    error = "Run timed out"
    openai_type = "timeout"


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


class HTTPProblem(OpentessError):
    """An answer the framework decided (no such route, wrong method), in our wire formats."""

    def __init__(self, status: int, name: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = name
        self.openai_type = "invalid_request_error" if status < 500 else "server_error"


def parse_model(model: type[M], data: Any) -> M:
    """Validate ``data`` as ``model``; InvalidInput with Laravel-style field errors otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for err in exc.errors():
            errors.setdefault(".".join(str(p) for p in err["loc"]) or "body", []).append(err["msg"])
        raise InvalidInput(errors) from exc
