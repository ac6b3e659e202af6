"""Errors of the reviewers' tool that a request or a command caused; each carries the HTTP status to answer.

They are UserErrors, so the CLI prints them in one line, and the server turns them into a 4xx with the
message; anything else escaping a request handler is a bug.
"""

from __future__ import annotations

from rlhf.errors import UserError


class AnnotationError(UserError):
    http_status = 400


class InvalidInput(AnnotationError):
    http_status = 422


class NotFound(AnnotationError):
    http_status = 404


class Forbidden(AnnotationError):
    http_status = 403


class Conflict(AnnotationError):
    http_status = 409
