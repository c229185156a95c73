"""Errors of the shared feature code."""

from finscore.exceptions import FinscoreError

__all__ = [
    "FeatureStateError",
    "UnknownFeature",
]


class FeatureStateError(FinscoreError, ValueError):
    """Feature state cannot hold or read a value (time out of range, unknown snapshot, ...)."""

    hint = (
        "a value is outside what the feature state can hold; workers check input bounds "
        "before the state (see FINSCORE_MIN_EVENT_TIME and the other input bounds), so this "
        "is a bug or a corrupt changelog record: report it with the record"
    )


class UnknownFeature(FinscoreError, KeyError):
    """A model names a feature this version of the feature code does not compute."""

    hint = "the model was trained on a newer feature set; upgrade the workers before announcing it"
