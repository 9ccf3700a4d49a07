"""Input format `hf_datasets`: a Hugging Face dataset saved with `Dataset.save_to_disk` (a folder with
`state.json`, `dataset_info.json` and `data-NNNNN-of-NNNNN.arrow` files in Arrow's streaming format). Each
Arrow file is a shard, a fragment of the dataset. The image column is `datasets`' Image feature (a struct
of bytes and path: its bytes are read, a path is never opened) or plain bytes; the caption is `caption`,
`text` or `txt`. The same dataset pushed to the hub as Parquet is read by the `parquet` format.
"""

from __future__ import annotations

import json
import posixpath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from curation.io.readers import (
    UNREADABLE_NAME,
    Budget,
    RawSample,
    damage_row,
    image_values,
    no_images,
    open_regular,
    reject_sample,
    table_columns,
    table_samples,
)
from curation.io.sources import Listing, Shard
from curation.schema import RejectReason

NAME = "hf_datasets"
STATE_FILE = "state.json"


def detect(listing: Listing) -> list[str]:
    """The data files that each saved dataset's state.json lists (cache files beside them are not data)."""
    if listing.fmt not in ("auto", NAME):
        return []
    found = []
    states = listing.with_suffix(f"/{STATE_FILE}")
    for state, data in zip(states, listing.heads(states)):
        folder = posixpath.dirname(state)
        try:
            files = [entry["filename"] for entry in json.loads(data)["_data_files"]]
        except (ValueError, KeyError, TypeError):
            continue  # a state.json of something else
        found += [posixpath.join(folder, name) for name in files if listing.has(posixpath.join(folder, name))]
    return found


def read_images_at(
    shard: Shard, storage_options: dict, rows: list[int], max_shard_bytes: int
) -> pa.ChunkedArray | None:
    """The images of `rows` (row indices in the file), in that order. Arrow's streaming format has no
    index of its batches: the file is read whole, and only the image column is looked at."""
    with open_regular(shard.url, storage_options) as f:
        data = f.read()
    try:
        table = ipc.open_stream(pa.BufferReader(data)).read_all()
    except (pa.ArrowInvalid, OSError):
        return None
    column = table_columns(table.column_names).get("image")
    if column is None or (rows and (min(rows) < 0 or max(rows) >= table.num_rows)):
        return None
    return image_values(table.column(column)).take(pa.array(rows, pa.int64()))


def read(shard: Shard, storage_options: dict, budget: Budget) -> tuple[list[RawSample], pa.ChunkedArray]:
    with open_regular(shard.url, storage_options) as f:
        data = f.read()  # all the I/O here: what fails below is damage of the file itself
    try:
        reader = ipc.open_stream(pa.BufferReader(data))
        columns = table_columns(reader.schema.names)
        batches = list(reader)
    except (pa.ArrowInvalid, OSError):
        return [damage_row(UNREADABLE_NAME, RejectReason.UNREADABLE_SHARD)], no_images(1)
    samples: list[RawSample] = []
    images: list[pa.Array] = []
    text_columns = {role: column for role, column in columns.items() if role != "image"}
    for batch in batches:
        table = pa.Table.from_batches([batch])
        rows = table_samples(table.select(list(text_columns.values())), text_columns, len(samples), pending=False)
        if "image" in columns:
            values = image_values(table.column(columns["image"]))
            lengths = pc.binary_length(values).fill_null(0).to_numpy(zero_copy_only=False).tolist()
            fits = next((i for i, size in enumerate(lengths) if not budget.take(size)), len(lengths))
            for sample in rows[fits:]:
                reject_sample(sample, RejectReason.SHARD_TOO_LARGE)
            images += [*values.slice(0, fits).chunks, pa.nulls(len(lengths) - fits, pa.binary())]
        else:
            images.append(pa.nulls(len(rows), pa.binary()))
        samples += rows
    return samples, pa.chunked_array(images, pa.binary())
