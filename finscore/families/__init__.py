"""Feature families, declared rather than coded: a TOML file names the input topic and schema,
the key, the label and its delay, the output, and the features from a small vocabulary
(:mod:`~finscore.families.spec`), which :class:`~finscore.families.engine.DeclaredFeatures`
compiles into the columnar window state of the hand-coded features, one code path for the
workers and for training (:func:`~finscore.families.engine.featurize`). The handbook's fraud
features are such declarations: the handbook's 15 (``fraud_handbook.toml``) and the whole
fraud row (``fraud_declared.toml``), :func:`builtin_family`.

The ground: numpy, the standard library, finscore.features and finscore.schemas only.
"""

from finscore.families.engine import DeclaredFeatures, featurize
from finscore.families.exceptions import FamilyError, FamilyInputError, FamilySpecError
from finscore.families.spec import (
    BUILTIN_FAMILIES,
    FEATURE_KINDS,
    CategoryFeature,
    DailySeriesFeature,
    FamilySpec,
    InputSpec,
    LabelRiskFeature,
    LabelSpec,
    MoveLabel,
    OutputSpec,
    RawFeature,
    SequenceFeature,
    TimeFlagFeature,
    WindowFeature,
    builtin_family,
    load_family,
)

__all__ = [
    "BUILTIN_FAMILIES",
    "FEATURE_KINDS",
    "CategoryFeature",
    "DailySeriesFeature",
    "DeclaredFeatures",
    "FamilyError",
    "FamilyInputError",
    "FamilySpec",
    "FamilySpecError",
    "InputSpec",
    "LabelRiskFeature",
    "LabelSpec",
    "MoveLabel",
    "OutputSpec",
    "RawFeature",
    "SequenceFeature",
    "TimeFlagFeature",
    "WindowFeature",
    "builtin_family",
    "featurize",
    "load_family",
]
