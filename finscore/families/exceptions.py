"""Errors of declared feature families: a declaration that does not hold together, or columns
that do not fit it."""

from __future__ import annotations

from finscore.exceptions import FinscoreError

__all__ = [
    "FamilyError",
    "FamilyInputError",
    "FamilySpecError",
]


class FamilyError(FinscoreError):
    """Base class of the errors of :mod:`finscore.families`."""


class FamilySpecError(FamilyError, ValueError):
    """A family declaration is invalid; the message names the bad entry (``[input] key``,
    ``features[3] 'NAME'``, ...) and, when loaded from a file, the file."""

    hint = "fix the named entry of the family declaration (see finscore/families/spec.py)"


class FamilyInputError(FamilyError, ValueError):
    """Columns handed to the feature engine do not fit the family (a missing column, columns
    of different lengths, a value of the wrong type)."""

    hint = "pass the columns the family declares (FamilySpec.input_fields / label_fields)"
