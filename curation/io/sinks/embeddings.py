"""The embeddings sink: the kept rows' embeddings in clip-retrieval's layout, which autofaiss,
embedding-reader and clip-retrieval's index and back end read (LAION released its embeddings so).

<dir>/img_emb/img_emb_{i}.npy           float16, one row per kept row: its `img_emb`, as stored in kept/
<dir>/text_emb/text_emb_{i}.npy         its `txt_emb` (when kept/ holds text embeddings)
<dir>/metadata/metadata_{i}.parquet     key, url, caption and the other scalar columns, row-aligned

Row j of part i is the same kept row in all three files. Parts hold `output.shard_rows` consecutive kept
rows (kept files by name, rows by key); `{i}` is zero-padded as clip-retrieval pads it (one digit more
than log10 of the part count), so the files sort in order. The vectors are kept/'s, untouched: unit
length as the model's embedding stage wrote them, float16.
"""

from __future__ import annotations

import functools
import io
import math
import re

import numpy as np
import pyarrow as pa

from curation.errors import UserError
from curation.io.commit import Location, parquet_bytes
from curation.io.sinks import ExportSettings, KeptFile, MapInOrder, Segment, kept_schema, read_segment, row_shards

DIRECTORY = "embeddings"
VECTORS = {"img_emb": "img_emb", "txt_emb": "text_emb"}  # kept/ column -> folder and file prefix
SKIPPED = ("image", "status", "reject_reason", "reject_stage", "dup_of", "dup_kind")
_OWN = re.compile(r"^(img_emb/img_emb_\d+\.npy|text_emb/text_emb_\d+\.npy|metadata/metadata_\d+\.parquet)$")


def owns(path: str) -> bool:
    return bool(_OWN.match(path))


def export(
    source: Location, files: list[KeptFile], dest: Location, settings: ExportSettings, map_in_order: MapInOrder
) -> dict:
    schema = kept_schema(source, files)
    if schema is not None and "img_emb" not in schema.names:
        raise UserError("kept/ holds no img_emb column: nothing to export as embeddings")
    vectors = [c for c in VECTORS if schema is not None and c in schema.names]
    metadata = [f.name for f in schema if f.name not in SKIPPED and f.name not in VECTORS] if schema else []
    parts = row_shards(files, settings.shard_rows)
    digits = int(math.log10(len(parts))) + 1 if parts else 1
    write = functools.partial(write_part, source, dest, vectors, metadata)
    results = list(map_in_order(write, [(str(i).zfill(digits), segments) for i, segments in enumerate(parts)]))
    written = sorted({v for r in results for v in r["vectors"]})
    return {
        "parts": len(parts),
        "rows": sum(r["rows"] for r in results),
        "dim": results[0]["dim"] if results else None,
        "vectors": [VECTORS[v] for v in written],
        "shard_rows": settings.shard_rows,
    }


def describe(summary: dict) -> str:
    if not summary["rows"]:
        return f"embeddings: no kept rows, nothing written to {summary['url']}"
    folders = ", ".join(f"{folder}/" for folder in [*summary["vectors"], "metadata"])
    return f"embeddings: {summary['rows']} rows x {summary['dim']} in {summary['parts']} parts ({folders}): {summary['url']}"


def write_part(
    source: Location, dest: Location, vectors: list[str], metadata: list[str], item: tuple[str, list[Segment]]
) -> dict:
    """One part: the .npy of each embedding column and the metadata Parquet, row-aligned."""
    name, segments = item
    tables = [t for segment in segments for t in read_segment(source, segment, [*metadata, *vectors])]
    table = pa.concat_tables(tables)
    written, dim = [], None
    for column in vectors:
        matrix = _matrix(table.column(column), column)
        if matrix is None:
            continue  # kept/ holds no such embeddings (e.g. a model without a text tower)
        folder = VECTORS[column]
        buffer = io.BytesIO()
        np.save(buffer, matrix, allow_pickle=False)
        dest.write_bytes(buffer.getvalue(), folder, f"{folder}_{name}.npy")
        written.append(column)
        dim = matrix.shape[1]
    dest.write_bytes(parquet_bytes(table.select(metadata)), "metadata", f"metadata_{name}.parquet")
    return {"rows": table.num_rows, "vectors": written, "dim": dim}


def _matrix(column: pa.ChunkedArray, name: str) -> np.ndarray | None:
    """A fixed-size list column as a rows x dim float16 matrix; None when every value is null."""
    if column.null_count == len(column):
        return None
    if column.null_count:
        raise UserError(f"{column.null_count} kept rows have no {name}: cannot write row-aligned embeddings")
    array = column.combine_chunks()
    dim = array.type.list_size
    return array.flatten().to_numpy(zero_copy_only=False).astype(np.float16, copy=False).reshape(-1, dim)
