"""Errors that carry the command-line exit status (docs/reference.md#exit-statuses).

0 all good; 3 partial (some inputs failed, the rest written); 1 nothing could be done;
2 usage error (bad arguments, unusable output location).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3


class TaxoclipError(Exception):
    """A failure to report to the user as one clear line, with an exit status."""

    exit_code = EXIT_FAILED


class UsageError(TaxoclipError, ValueError):
    """Arguments or an output location that cannot work; nothing was written."""

    exit_code = EXIT_USAGE


class InputError(TaxoclipError):
    """An input (file, model, shard) that cannot be read; names the input and the reason."""

    exit_code = EXIT_FAILED
