"""Models as the ground knows them (torch-free, Kafka-free; workers import it).

- :mod:`finscore.models.artifact`   artifacts, manifests, hashing, signing and the ONE
  verification every loader runs (:func:`verify_artifact`).
- :mod:`finscore.models.registry`   the local registry: versions, champion, promote/rollback.
- :mod:`finscore.models.keys`       where the signing and verify keys come from.
- :mod:`finscore.models.evaluation` quality metrics (AUC, AP, precision@k, macro-F1; numpy).

Importing this package loads neither cryptography, numpy nor onnxruntime (they are imported
by the functions that need them); :mod:`~finscore.models.evaluation` is not re-exported here
for the same reason (it imports numpy).
"""

from finscore.models.artifact import (
    KAFKA_DEFAULT_MESSAGE_BYTES,
    MAX_ARTIFACT_BYTES,
    Artifact,
    ArtifactError,
    Manifest,
    check_manifest,
    check_reference_outputs,
    check_signature,
    generate_keypair,
    public_key_of,
    sha256_hex,
    sign_bytes,
    signature_valid,
    signed_payload,
    verify_artifact,
)
from finscore.models.keys import ModelKeys, resolve_keys
from finscore.models.registry import (
    MODEL_NAME_PATTERN,
    VERSION_PATTERN,
    Registry,
    check_model_name,
    check_version,
)

__all__ = [
    "KAFKA_DEFAULT_MESSAGE_BYTES",
    "MAX_ARTIFACT_BYTES",
    "MODEL_NAME_PATTERN",
    "VERSION_PATTERN",
    "Artifact",
    "ArtifactError",
    "Manifest",
    "ModelKeys",
    "Registry",
    "check_manifest",
    "check_model_name",
    "check_reference_outputs",
    "check_signature",
    "check_version",
    "generate_keypair",
    "public_key_of",
    "resolve_keys",
    "sha256_hex",
    "sign_bytes",
    "signature_valid",
    "signed_payload",
    "verify_artifact",
]
