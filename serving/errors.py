"""Errors a request can meet after validation, carried to the HTTP error model."""

from __future__ import annotations


class RequestError(ValueError):
    """A request the market or the models cannot serve; ``code`` and ``status`` for the HTTP error."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code, self.status = code, status

    def __reduce__(self):  # travels between replicas with its code and status
        return type(self), (self.code, str(self), self.status)


def idempotency_conflict() -> RequestError:
    return RequestError(
        "idempotency_conflict", "this Idempotency-Key was used for a different request; use a new key per request", 409
    )
