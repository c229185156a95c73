"""The event contract: Avro schemas (``*.avsc``), the topic catalog and the codec.

Depends on nothing but fastavro (and, lazily, confluent-kafka's schema-registry client).
"""

from finscore.schemas.codec import SCHEMA_NAMES, Codec, load_schema, to_jsonable
from finscore.schemas.exceptions import DecodeError, EncodeError, SchemaError
from finscore.schemas.samples import sample

__all__ = [
    "SCHEMA_NAMES",
    "Codec",
    "DecodeError",
    "EncodeError",
    "SchemaError",
    "load_schema",
    "sample",
    "to_jsonable",
]
