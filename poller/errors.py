"""The daemon's own exception hierarchy (callers never import driver exceptions)."""

from __future__ import annotations


class PollerError(Exception):
    """Base class of every error the daemon raises on purpose."""


class ConfigError(PollerError):
    """Invalid configuration: the message is one line naming the key and the value.

    The CLI turns it into exit code 2 with no traceback.
    """


class SchemaError(PollerError):
    """The database schema is missing, behind, or newer than this build knows."""
