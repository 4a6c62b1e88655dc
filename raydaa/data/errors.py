"""The data layer's errors, in one place so that every module can raise them and a command
can catch them all as `DataValidationError` (a ValueError)."""

from __future__ import annotations


class DataValidationError(ValueError):
    """The data cannot start a run: too many bad rows, or (DataSourceError) a source that
    cannot be read. The message names the source and what was expected."""


class DataSourceError(DataValidationError):
    """A source cannot be read or used: missing, empty, its columns do not fit the mapping or
    any accepted format, or it contradicts data.format. The message names the scenario key
    (when known), the path, the column and what was expected."""
