"""Input format `parquet`: Parquet files with image bytes (img2dataset's parquet output, or a Hugging Face
dataset pushed to the hub as Parquet: its image struct's bytes). A URL-list Parquet (a url column and
no image) is read by the same code for format `urls`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.errors import UserError
from curation.io.readers import (
    IMAGE_BATCH_ROWS,
    MAX_DAMAGE_ROWS,
    UNREADABLE_NAME,
    Budget,
    RawSample,
    TableSource,
    damage_row,
    image_values,
    no_images,
    reject_sample,
    table_columns,
    table_samples,
)
from curation.io.sources import Listing, Shard, image_column, parquet_kind
from curation.schema import RejectReason

NAME = "parquet"


def detect(listing: Listing) -> list[str]:
    """Parquet files with an image column (or an unreadable footer: the reader reports the damage), not
    beside a same-named tar (img2dataset's metadata)."""
    if listing.fmt not in ("auto", NAME, "urls"):
        return []
    found = []
    for path in listing.with_suffix(".parquet"):
        if listing.beside_tar(path):
            continue
        schema = listing.schema(path)
        kind = "unknown" if schema is None else parquet_kind(schema, path)
        if listing.fmt == "urls" and kind == NAME:
            raise UserError(
                f"input file {path} is a Parquet with image bytes, not input.format=urls: set input.format to auto"
            )
        if kind == NAME or kind == "unknown":
            found.append(path)
    return found


def read_images(shard: Shard, storage_options: dict, max_shard_bytes: int) -> pa.ChunkedArray | None:
    """Only the image column, with no row-by-row work, under the same budget as `read` (so the same rows
    have bytes); None when that fails (a corrupt row group): the caller reads the shard whole."""
    with TableSource(shard.url, storage_options, max_shard_bytes) as source:
        try:
            parquet = source.parquet()
            column = image_column(parquet.schema_arrow.names)
            if column is None:
                return None
            budget, chunks = Budget(max_shard_bytes), []
            for i in range(parquet.num_row_groups):
                rows = parquet.metadata.row_group(i).num_rows
                chunks += _row_group_images(parquet, i, column, rows, budget)[0].chunks
            return pa.chunked_array(chunks, pa.binary())
        except Exception:  # noqa: BLE001 - damage, or an unusual column type: the full reader copes
            source.raise_io_error()
    return None


def read_images_at(
    shard: Shard, storage_options: dict, rows: list[int], max_shard_bytes: int
) -> pa.ChunkedArray | None:
    """The images of `rows` (row indices in the file), in that order: only the image column of the row
    groups that hold them is read, page by page from the file. None when that fails (see read_images)."""
    with TableSource(shard.url, storage_options, 0) as source:  # max_bytes 0: never the whole file
        try:
            parquet = source.parquet()
            column = image_column(parquet.schema_arrow.names)
            if column is None:
                return None
            sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
            starts = np.cumsum([0, *sizes])
            wanted = np.asarray(rows, np.int64)
            if len(wanted) and (wanted.min() < 0 or wanted.max() >= starts[-1]):
                return None
            groups = np.searchsorted(starts, wanted, side="right") - 1
            chunks: list[pa.Array] = []
            index = np.empty(len(wanted), np.int64)
            base = 0
            for group in np.unique(groups).tolist():
                at = np.flatnonzero(groups == group)
                values = image_values(parquet.read_row_group(group, columns=[column], use_threads=False).column(0))
                index[at] = base + wanted[at] - starts[group]
                chunks += values.chunks
                base += len(values)
            return pa.chunked_array(chunks, pa.binary()).take(pa.array(index))  # one copy of the bytes
        except Exception:  # noqa: BLE001 - damage, or an unusual column type
            source.raise_io_error()
    return None


def read(shard: Shard, storage_options: dict, budget: Budget) -> tuple[list[RawSample], pa.ChunkedArray]:
    """The rows of a Parquet shard (image bytes, or a URL list: no image column) under the budget."""
    with TableSource(shard.url, storage_options, budget.limit) as source:
        try:
            parquet = source.parquet()
            names = parquet.schema_arrow.names
        except Exception:  # noqa: BLE001 - any unparsable footer is the same damage
            source.raise_io_error()
            return [damage_row(UNREADABLE_NAME, RejectReason.UNREADABLE_SHARD)], no_images(1)
        parquet_kind(parquet.schema_arrow, shard.url)  # neither image nor url column: a UserError
        columns = table_columns(names)
        text_columns = {role: column for role, column in columns.items() if role != "image"}
        try:
            # Text read as dictionaries: pyarrow then never checks it is UTF-8 (it does for a column the
            # writer stored as a dictionary, and raises on a single bad byte): the cleaning decodes it.
            byte_arrays = [c.path for c in parquet.schema if c.physical_type == "BYTE_ARRAY" and "." not in c.path]
            dictionaries = [column for column in text_columns.values() if column in byte_arrays]
            if dictionaries:
                parquet = source.parquet(read_dictionary=dictionaries)
        except Exception:  # noqa: BLE001 - the footer read once already: a schema pyarrow cannot map
            source.raise_io_error()
        samples: list[RawSample] = []
        images: list[pa.Array] = []
        position = 0
        for i in range(parquet.num_row_groups):
            rows = parquet.metadata.row_group(i).num_rows
            try:
                # The images first, as read_image_column reads them: both charge the budget alike.
                group_images, excess_from = _row_group_images(parquet, i, columns.get("image"), rows, budget)
                table = parquet.read_row_group(i, columns=list(text_columns.values()), use_threads=False)
                if table.num_rows != rows:
                    raise ValueError(f"row group {i} holds {table.num_rows} rows, its footer says {rows}")
            except Exception:  # noqa: BLE001 - a corrupt page: keep the other row groups
                source.raise_io_error()
                # One rejected row per row the footer says the group holds: the funnel still adds up.
                broken = _broken_row_group(i, rows)
                samples += broken
                images.append(pa.nulls(len(broken), pa.binary()))
            else:
                group_samples = table_samples(table, text_columns, position, pending="image" not in columns)
                for sample in group_samples[excess_from:]:
                    reject_sample(sample, RejectReason.SHARD_TOO_LARGE)
                samples += group_samples
                images += group_images.chunks
            position += rows
    return samples, pa.chunked_array(images, pa.binary())


def _broken_row_group(index: int, rows: int) -> list[RawSample]:
    """The rows of an undecodable row group: one per row its footer counts, or one standing for them all
    when the footer claims more than MAX_DAMAGE_ROWS (a footer of garbage may claim billions)."""
    if rows > MAX_DAMAGE_ROWS:
        return [damage_row(f"!row-group-{index}", RejectReason.BROKEN_ROW_GROUP)]
    return [damage_row(f"!row-group-{index}-{j}", RejectReason.BROKEN_ROW_GROUP) for j in range(rows)]


def _row_group_images(
    parquet: pq.ParquetFile, index: int, column: str | None, rows: int, budget: Budget
) -> tuple[pa.ChunkedArray, int]:
    """A row group's image bytes (null past the budget) and the first row past it (`rows` if none).
    The column is read IMAGE_BATCH_ROWS rows at a time and stops at the first image that does not fit:
    what is past the cap is never read into memory."""
    if column is None:
        return no_images(rows), rows
    if budget.full:
        return no_images(rows), 0
    chunks: list[pa.Array] = []
    seen = 0
    for batch in parquet.iter_batches(
        batch_size=IMAGE_BATCH_ROWS, row_groups=[index], columns=[column], use_threads=False
    ):
        values = image_values(batch.column(0))
        lengths = pc.binary_length(values).fill_null(0).to_numpy(zero_copy_only=False)
        fits = next((j for j, size in enumerate(lengths.tolist()) if not budget.take(size)), len(values))
        chunks += values.slice(0, fits).chunks
        if fits < len(values):
            return pa.chunked_array([*chunks, pa.nulls(rows - seen - fits, pa.binary())], pa.binary()), seen + fits
        seen += len(values)
    if seen != rows:
        raise ValueError(f"row group {index} holds {seen} images, its footer says {rows} rows")
    return pa.chunked_array(chunks, pa.binary()), rows
