"""The output Parquet as Hugging Face `datasets` reads it: `load_dataset("parquet", data_files=...)` gives
PIL images and the embeddings as fixed-length arrays, with no `features=` argument.

`datasets` takes a file's features from its schema metadata (key `huggingface`, `{"info": {"features":
...}}`), but only for a column whose Arrow type is the one the feature stores: its `Image` feature stores
a struct {bytes: binary, path: string}, and a plain binary column declared as `Image` is read as bytes
(checked with datasets 5.2). So the image column of kept/ and rejected/ is written as that struct (the
bytes untouched, `path` null); `curation.io.readers.image_values` reads either form back as bytes.
kept/ declares it an `Image` (decoded to PIL); rejected/ an `Image` with `decode: false` (dicts of
bytes): a rejected image may not decode at all.

Value features are written in the `Sequence` spelling, which datasets 2.x to 5.x all read.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

IMAGE_COLUMN = "image"
IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
METADATA_KEY = b"huggingface"

_VALUE_TYPES = {
    pa.string(): "string",
    pa.large_string(): "large_string",
    pa.binary(): "binary",
    pa.large_binary(): "large_binary",
    pa.bool_(): "bool",
    pa.int8(): "int8",
    pa.int16(): "int16",
    pa.int32(): "int32",
    pa.int64(): "int64",
    pa.uint8(): "uint8",
    pa.uint16(): "uint16",
    pa.uint32(): "uint32",
    pa.uint64(): "uint64",
    pa.float16(): "float16",
    pa.float32(): "float32",
    pa.float64(): "float64",
}


def image_struct(images: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """Image bytes as the {bytes, path} struct of datasets' Image feature (null where there are none)."""
    if isinstance(images, pa.Array):
        images = pa.chunked_array([images])
    if images.type == IMAGE_TYPE:
        return images
    chunks = []
    for chunk in images.cast(pa.binary()).chunks:
        paths = pa.nulls(len(chunk), pa.string())
        chunks.append(pa.StructArray.from_arrays([chunk, paths], fields=list(IMAGE_TYPE), mask=pc.is_null(chunk)))
    return pa.chunked_array(chunks, IMAGE_TYPE)


def with_features(table: pa.Table, *, decode_images: bool = True) -> pa.Table:
    """`table` with its image column as datasets' Image struct and the features in the schema metadata."""
    if IMAGE_COLUMN in table.column_names:
        at = table.column_names.index(IMAGE_COLUMN)
        table = table.set_column(at, pa.field(IMAGE_COLUMN, IMAGE_TYPE), image_struct(table.column(IMAGE_COLUMN)))
    features = {}
    for field in table.schema:
        if field.name == IMAGE_COLUMN:
            features[field.name] = {"_type": "Image"} if decode_images else {"decode": False, "_type": "Image"}
            continue
        feature = _feature(field.type)
        if feature is not None:
            features[field.name] = feature
    metadata = dict(table.schema.metadata or {})
    metadata[METADATA_KEY] = json.dumps({"info": {"features": features}}, separators=(",", ":")).encode()
    return table.replace_schema_metadata(metadata)


def _feature(type_: pa.DataType) -> dict | None:
    """datasets' feature for an Arrow type; None where datasets infers it alone."""
    if type_ in _VALUE_TYPES:
        return {"dtype": _VALUE_TYPES[type_], "_type": "Value"}
    if pa.types.is_fixed_size_list(type_) or pa.types.is_list(type_):
        inner = _feature(type_.value_type)
        if inner is None:
            return None
        length = type_.list_size if pa.types.is_fixed_size_list(type_) else -1
        return {"feature": inner, "length": length, "_type": "Sequence"}
    return None
