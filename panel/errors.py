"""The whole PanelError tree: every error the panel raises on purpose, each class with its HTTP status and
OpenAI-style error type. Errors the user can cause are 4xx; errors of an engine or the hub are 5xx."""

from __future__ import annotations

from typing import Any


class PanelError(Exception):
    """Base of every error the panel raises on purpose; carries an HTTP status and a type."""

    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type}}


class BadRequestError(PanelError):
    status_code = 400
    error_type = "invalid_request_error"


class UnauthorizedError(PanelError):
    status_code = 401
    error_type = "authentication_error"


class ExpiredKeyError(UnauthorizedError):
    """A right API key past its expiry (a rotated key's grace is over): not counted as a guessed key."""


class ForbiddenError(PanelError):
    status_code = 403
    error_type = "permission_error"


class NotFoundError(PanelError):
    status_code = 404
    error_type = "not_found_error"


class NotResidentError(NotFoundError):
    """A request names a model that is not resident (it may be in the library: load on request)."""

    def __init__(self, message: str, model: str) -> None:
        super().__init__(message)
        self.model = model


class ConflictError(PanelError):
    """A second load while one runs, a generation on an engine with nothing loaded, a busy GPU."""

    status_code = 409
    error_type = "conflict_error"


class InsufficientMemoryError(ConflictError):
    """A load that cannot fit in the memory the panel may use, even after evicting every idle model."""

    error_type = "insufficient_memory"


class PayloadTooLargeError(PanelError):
    status_code = 413
    error_type = "request_too_large"


class RateLimitError(PanelError):
    status_code = 429
    error_type = "rate_limit_error"
    retry_after_s: float | None = None  # when set, the answer carries Retry-After (whole seconds, at least 1)


class ThrottledError(RateLimitError):
    """Too many wrong keys from one address: answered with Retry-After, the key not even looked at."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"too many invalid API keys from this address; try again in {max(1, round(retry_after_s))} s")


class QuotaExceededError(RateLimitError):
    """A user's or key's quota (tokens per day, requests per minute) is used up until it resets."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class EngineFailure(PanelError):
    """The engine itself failed (child crashed, load failed, stream broke)."""

    status_code = 502
    error_type = "engine_error"


class EngineUnavailableError(PanelError):
    status_code = 503
    error_type = "engine_unavailable"


class HubUnreachableError(PanelError):
    status_code = 502
    error_type = "hub_unreachable"


class DiskFullError(PanelError):
    status_code = 507
    error_type = "insufficient_storage"


class SuiteError(BadRequestError):
    """A suite file the user gave cannot be used; the message names the file and the case."""
