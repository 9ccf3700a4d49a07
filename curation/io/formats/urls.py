"""Input format `urls`: URL lists whose images the download stage fetches: Parquet with a `url` column and
no image column, CSV/TSV with a header naming `url` (and `caption`). An img2dataset metadata Parquet
whose tar is missing is refused with input.format auto (reading it would download the shard again)."""

from __future__ import annotations

import hashlib
import posixpath

import pyarrow as pa
import pyarrow.csv as pacsv

from curation.errors import UserError
from curation.io.formats import parquet
from curation.io.readers import (
    UNREADABLE_NAME,
    Budget,
    RawSample,
    damage_row,
    image_values,
    no_images,
    read_file_bytes,
    table_columns,
    table_samples,
)
from curation.io.sources import (
    HEADER_BYTES,
    URL_LIST_SUFFIXES,
    Listing,
    Shard,
    check_url_list_header,
    header_columns,
    is_metadata,
    parquet_kind,
    url_list_delimiter,
)
from curation.schema import RejectReason

NAME = "urls"


def detect(listing: Listing) -> list[str]:
    found = []
    if listing.fmt in ("auto", NAME, "parquet"):
        for path in listing.with_suffix(".parquet"):
            schema = listing.schema(path)
            if listing.beside_tar(path) or schema is None or parquet_kind(schema, path) != NAME:
                continue
            stem = path[: -len(".parquet")]
            if listing.fmt == "parquet":
                raise UserError(f"input file {path} is a URL list, not input.format=parquet: set input.format to auto")
            if listing.fmt == "auto" and is_metadata(schema, stem, listing):
                raise UserError(
                    f"input file {path} is img2dataset metadata but {posixpath.basename(stem)}.tar is missing beside "
                    "it: restore the tar, or set input.format=urls to download the URLs it lists"
                )
            found.append(path)
    if listing.fmt in ("auto", NAME):
        url_lists = listing.with_suffix(*URL_LIST_SUFFIXES)
        for path, head in zip(url_lists, listing.heads(url_lists, HEADER_BYTES)):
            check_url_list_header(path, head)
            found.append(path)
    return found


def read(shard: Shard, storage_options: dict, budget: Budget) -> tuple[list[RawSample], pa.ChunkedArray]:
    if shard.url.endswith(".parquet"):
        return parquet.read(shard, storage_options, budget)
    return _read_csv(shard, storage_options)


def _read_csv(shard: Shard, storage_options: dict) -> tuple[list[RawSample], pa.ChunkedArray]:
    """A CSV or TSV URL list with a header line naming a `url` column."""
    data = read_file_bytes(shard, storage_options)
    delimiter = url_list_delimiter(shard.url)
    names = header_columns(data[:HEADER_BYTES], delimiter)
    if not names:
        return [damage_row(UNREADABLE_NAME, RejectReason.UNREADABLE_SHARD)], no_images(1)
    bad_lines: list[RawSample] = []

    def on_invalid_row(row) -> str:
        line = row.number if row.number is not None else hashlib.sha256(row.text.encode()).hexdigest()[:12]
        bad_lines.append(damage_row(f"!record-{line}", RejectReason.MALFORMED_ROW))
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_invalid_row
            ),
            # Every column as bytes: no type guessing (keys keep their leading zeros), any encoding.
            convert_options=pacsv.ConvertOptions(column_types={name: pa.binary() for name in names}),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return [damage_row(UNREADABLE_NAME, RejectReason.UNREADABLE_SHARD)], no_images(1)
    parquet_kind(table.schema, shard.url)
    columns = table_columns(table.column_names)
    pending = "image" not in columns
    samples = table_samples(table, columns, 0, pending)
    images = no_images(table.num_rows) if pending else image_values(table.column(columns["image"]))
    # CSV cannot tell an empty cell from a missing one: an empty caption is missing (and never fetched).
    for sample in samples:
        if sample.caption == b"":
            sample.caption = None
    return samples + bad_lines, pa.chunked_array([*images.chunks, *no_images(len(bad_lines)).chunks], pa.binary())
