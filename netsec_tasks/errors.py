"""Errors that name the problem.

Every error raised on bad input or an unreachable service is a :class:`NetsecError`: the CLI
prints its message (no traceback) and exits non-zero; the DAG lets it fail the task with the same
message. Messages say *what* is wrong, *where* (file, column, row, key, connection) and, when
there is one, what to do about it.
"""

from __future__ import annotations


class NetsecError(Exception):
    """Base class; ``exit_code`` is what the CLI returns."""

    exit_code = 2


class ConfigError(NetsecError):
    """A configuration key, file or environment override is invalid."""


class DataError(NetsecError):
    """Input data is unusable: unreadable file, missing/unexpected columns, empty, one class..."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        columns: list[str] | None = None,
        rows: list[int] | None = None,
    ):
        self.source = source
        self.columns = list(columns or [])
        self.rows = list(rows or [])
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + message)


class ValidationFailed(DataError):
    """Validation ran and the data failed it; the report path is in the message."""


class SourceUnavailable(NetsecError):
    """A service (MongoDB, S3, MLflow) could not be reached or refused the credentials."""

    exit_code = 3


class RegistryError(NetsecError):
    """The MLflow registry refused an operation or has no model where one is needed."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (at most 300 characters), else its type's name: what a
    one-line log or error message quotes of an error raised by a library."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM). A BaseException, like KeyboardInterrupt, so no
    ``except Exception`` on the way up swallows it; clean-up in ``finally``/``except BaseException``
    still runs. The CLI exits 143 (128 + SIGTERM)."""

    exit_code = 143
