"""Let go of image bytes the input shard still holds, once nothing downstream needs them.

An image's bytes are the largest thing in a row (a web JPEG is ~100-300 KB; its model-sized pixels and
every score together are a few KB). When they came from the input shard itself (Parquet, webdataset), the
score phase need not carry them past decode nor store them in the scored shard: the write phase reads
them again from the input, at the positions the reader recorded while the input file is the version that
was scored (its size and mtime/ETag: `curation.job.with_source_bytes`), else by the `sha256` decode
recorded (`restore_source_bytes`), so an input changed between the two phases is an error, never a
silent mix. Bytes the shard does not hold — downloaded from a URL list, or rewritten by a stage (faces blurred) — are kept in the scored shard.

This halves the image-byte traffic of a job: no hand-off of the bytes from the decoding worker to the
embedding actor and the commit, and one write of them (the final one) instead of two.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stages.base import BatchStage, binary_views, set_column

IN_SOURCE = "_image_in_source"  # internal column: the row's `image` is the bytes its input shard holds


def mark_source_bytes(table: pa.Table) -> pa.Table:
    """At read time: rows with bytes have them from the shard (URL-list rows get theirs later)."""
    return set_column(table, IN_SOURCE, pc.is_valid(table.column("image")))


def mark_bytes_rewritten(table: pa.Table, rows) -> pa.Table:
    """A stage replaced the bytes of `rows` (positions): the shard no longer holds them."""
    if IN_SOURCE not in table.column_names or not len(rows):
        return table
    flags = table.column(IN_SOURCE).to_numpy(zero_copy_only=False).copy()
    flags[np.asarray(rows, dtype=np.int64)] = False
    return set_column(table, IN_SOURCE, pa.array(flags, pa.bool_()))


def release_source_bytes(table: pa.Table) -> pa.Table:
    """`image` set to null where the input shard holds the same bytes."""
    if IN_SOURCE not in table.column_names or "image" not in table.column_names:
        return table
    in_source = table.column(IN_SOURCE).fill_null(False)
    if not pc.any(in_source).as_py():
        return table
    images = table.column("image")
    return set_column(table, "image", pc.if_else(in_source, pa.scalar(None, images.type), images))


@dataclass(kw_only=True)
class ReleaseSourceBytes(BatchStage):
    """The last CPU stage when no later stage reads image bytes (see the module doc)."""

    name: ClassVar[str] = "release"

    def process_batch(self, table: pa.Table) -> pa.Table:
        return release_source_bytes(table)


class SourceChanged(Exception):
    """The input shard's bytes for a row are not those the score phase hashed."""


def sha256_each(values: pa.Array) -> list[str | None]:
    """The sha256 hex digest of each value of a binary array (None for a null), hashed where the array
    holds them: no Python bytes object per value, no copy of what may be hundreds of megabytes."""
    ends, view = binary_views(values)
    if view is None:
        return [None] * len(values)
    ends = ends.tolist()
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    return [hashlib.sha256(view[ends[i] : ends[i + 1]]).hexdigest() if valid[i] else None for i in range(len(values))]


def restore_source_bytes(
    table: pa.Table, source_images: pa.Array | pa.ChunkedArray, rows: np.ndarray | None = None
) -> pa.Table:
    """Fill each null `image` of a scored shard that has a `sha256` (and is one of `rows`, a boolean mask,
    where given) with the bytes of that hash among `source_images` (the input shard's images, read
    again); raises SourceChanged naming the first row whose bytes the input no longer holds. Matching by
    hash needs no keys from the input (so only its image column is read) and puts back exactly the bytes
    that were scored. The write phase does this only where it cannot read the bytes by position
    (job.with_source_bytes)."""
    images = table.column("image")
    wanted = pc.and_(pc.is_null(images), pc.is_valid(table.column("sha256"))).to_numpy(zero_copy_only=False)
    if rows is not None:
        wanted = wanted & rows
    rows = np.flatnonzero(wanted)
    if not len(rows):
        return table
    source_images = source_images.combine_chunks() if isinstance(source_images, pa.ChunkedArray) else source_images
    index = {digest: i for i, digest in enumerate(sha256_each(source_images)) if digest is not None}
    positions = np.full(table.num_rows, -1, np.int64)
    for row, expected in zip(rows, table.column("sha256").take(rows).to_pylist()):
        if expected not in index:
            raise SourceChanged(table.column("key")[int(row)].as_py())
        positions[row] = index[expected]
    found = source_images.take(pa.array(positions, mask=positions < 0))
    return set_column(table, "image", pc.if_else(pa.array(wanted), found.cast(images.type), images))
