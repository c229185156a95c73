"""Errors of the shared feature code."""

from finscore.exceptions import FinscoreError


class FeatureStateError(FinscoreError, ValueError):
    """Feature state cannot hold or read a value (time out of range, unknown snapshot, ...)."""

    hint = "the record is out of what the feature state can represent; it is dead-lettered"


class UnknownFeature(FinscoreError, KeyError):
    """A model names a feature this version of the feature code does not compute."""

    hint = "the model was trained on a newer feature set; upgrade the workers before announcing it"
