"""Columnar Avro: decode a batch of records straight into numpy columns and encode columns
back, without a dict per record (:class:`ColumnarCodec`; the parts: ``plan``, ``decode``,
``encode``, ``read``, ``write``)."""

from finscore.schemas.columnar.codec import ArrayColumn, ColumnarCodec, DecodedBatch, Unscaled

__all__ = ["ArrayColumn", "ColumnarCodec", "DecodedBatch", "Unscaled"]
