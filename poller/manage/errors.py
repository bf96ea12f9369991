"""What the service layer refuses, each mapped to one HTTP status by the API."""

from __future__ import annotations


class ManageError(Exception):
    """A refusal whose message is safe to show the caller (no secret, no body quoted)."""

    status = 400


class InvalidRequest(ManageError):
    status = 400


class NotFound(ManageError):
    """Absent, or not the caller's (never told apart: another user's instance is 404)."""

    status = 404


class NameTaken(ManageError):
    status = 409


class UpstreamUnavailable(ManageError):
    """Intuit's token endpoint could not be reached or answered 5xx."""

    status = 502
