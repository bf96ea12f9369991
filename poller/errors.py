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


class EmbeddedError(PollerError):
    """The embedded PostgreSQL (poller.store.embedded) could not be started: one line naming
    its data directory and the server's last log line."""


class DatabaseError(PollerError):
    """A database call failed. The store raises it (a subclass) in place of the driver's
    exceptions, so services handle "the database failed us" in one `except` clause."""


class DatabaseUnavailable(DatabaseError):
    """The server could not be reached, the connection was lost, or a statement timed out:
    retrying later, on another connection, may succeed."""


class StatementRefused(DatabaseError):
    """The server refused a statement over a working connection (a constraint, a value it
    cannot hold): retrying the same statement fails again."""


class StartupStopped(PollerError):
    """A stop signal arrived while start-up was still waiting (for the database): the daemon
    exits as after any stop, with code 0."""
