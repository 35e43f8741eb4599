"""The service's errors: one root, each kind carrying the HTTP status it maps to.

SidetaskError                       500  a bug or a broken disk
├── BadRequest                      400  the request is wrong (IllegalArgumentException)
│   └── TransitionRefused           400  the task's status does not allow that change
├── Unauthorized                    401
├── Forbidden                       403
├── NotFound                        404  no such graph, task or route (NotFoundException)
├── MethodNotAllowed                405
├── Conflict                        409
├── PayloadTooLarge                 413
├── Unprocessable                   422  an Idempotency-Key reused for another request
├── TooManyRequests                 429
├── ServiceUnavailable              503  the store cannot write now; retry later
└── StoreLocked                     the database file is used by another process
"""

from __future__ import annotations


class SidetaskError(Exception):
    """The root of every error the service raises on purpose."""

    status = 500
    #: the `exception` field of the error body
    kind = "ServerError"

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause


class BadRequest(SidetaskError):
    status = 400
    kind = "IllegalArgumentException"


class TransitionRefused(BadRequest):
    """A status change the transition table (or the row's current status) does not allow."""


class Unauthorized(SidetaskError):
    status = 401
    kind = "NotAuthorizedException"


class Forbidden(SidetaskError):
    status = 403
    kind = "ForbiddenException"


class NotFound(SidetaskError):
    status = 404
    kind = "NotFoundException"


class MethodNotAllowed(SidetaskError):
    status = 405
    kind = "NotAllowedException"


class Conflict(SidetaskError):
    status = 409
    kind = "ConflictException"


class PayloadTooLarge(SidetaskError):
    status = 413
    kind = "PayloadTooLargeException"


class Unprocessable(SidetaskError):
    """Well-formed, but it cannot be done as asked: an Idempotency-Key that names a task
    submitted with a different request (the IETF Idempotency-Key draft's 422)."""

    status = 422
    kind = "UnprocessableEntityException"


class TooManyRequests(SidetaskError):
    """Refused for now: `retry_after` seconds is when to try again (the Retry-After header)."""

    status = 429
    kind = "TooManyRequestsException"

    def __init__(self, message: str, cause: str = "", retry_after: int = 1) -> None:
        super().__init__(message, cause)
        self.retry_after = retry_after


class ServiceUnavailable(SidetaskError):
    """Refused for now; with `retry_after`, the seconds to wait (the Retry-After header)."""

    status = 503
    kind = "ServiceUnavailableException"

    def __init__(self, message: str, cause: str = "", retry_after: int | None = None) -> None:
        super().__init__(message, cause)
        self.retry_after = retry_after


class StoreLocked(SidetaskError):
    """Another process holds the database: two supervisors would run the same task twice."""
