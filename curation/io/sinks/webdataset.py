"""The webdataset sink: kept rows as tars in img2dataset's layout, which open_clip's trainer, the
`webdataset` package and img2dataset-fed loaders read (and `curate run` reads back as input).

<dir>/00000.tar         per sample `<key>.jpg|png|webp` (the image), `<key>.json` (its metadata),
                        `<key>.txt` (the cleaned caption); members sorted by name within a sample,
                        samples in kept/ order (kept files by name, rows by key)
<dir>/00000.parquet     the same metadata, one row per sample, in tar order (no image)
<dir>/00000_stats.json  img2dataset's shard statistics (times fixed at 0, so the file is reproducible)

Keys are img2dataset's: the shard number then the sample's index in the shard (at least 5 + 4 digits).
The json (and Parquet) row holds img2dataset's fields (url, caption, key, status "success",
error_message, width and height of the stored image, original_width and original_height, exif, sha256),
then every other scalar column of kept/ (source, phash, clip_score, each head's score, lang, lang_score,
pii, faces), with kept/'s own key as `curation_key`. Columns that only describe a rejection (status,
reject_reason, reject_stage, dup_of, dup_kind) are null on every kept row and left out; embeddings
are the embeddings sink's.

Images are the kept bytes as they are (JPEG, PNG and WebP; other formats become PNG), or resized
(`output.resize`, img2dataset's modes). Tars are deterministic (curation.io.tar): the same kept/ and
settings give byte-identical files.
"""

from __future__ import annotations

import functools
import json
import math
import re

import numpy as np
import pyarrow as pa

from curation.errors import UserError
from curation.images import export_image
from curation.io.commit import Location, parquet_bytes
from curation.io.readers import image_values
from curation.io.sinks import (
    ExportSettings,
    KeptFile,
    MapInOrder,
    Segment,
    ShardPlanner,
    kept_schema,
    open_for_writing,
    read_file,
    read_segment,
    row_shards,
)
from curation.io.tar import TarWriter, archive_size, member_bytes

DIRECTORY = "webdataset"
SHARD_DIGITS = 5  # at least: 00000.tar
INDEX_DIGITS = 4  # at least: a key is 9 digits, as img2dataset's for up to 10,000 samples a shard
REJECTION_COLUMNS = ("status", "reject_reason", "reject_stage", "dup_of", "dup_kind")
EMBEDDING_COLUMNS = ("img_emb", "txt_emb")
IMG2DATASET_FIELDS = pa.schema(
    [
        ("url", pa.string()),
        ("caption", pa.string()),
        ("key", pa.string()),
        ("status", pa.string()),
        ("error_message", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
        ("exif", pa.string()),
        ("sha256", pa.string()),
    ]
)
# kept/ columns that fill img2dataset's fields (width and height as original_width / original_height)
_IMG2DATASET_SOURCES = ("image", "url", "caption", "sha256", "width", "height")
_RENAMED = {"key": "curation_key"}  # img2dataset's key is the sample's key in the tar
_OWN = re.compile(r"^\d{5,}(\.tar|\.parquet|_stats\.json)$")


def owns(path: str) -> bool:
    return bool(_OWN.match(path))


def shard_stats(count: int) -> dict:
    """img2dataset's `<shard>_stats.json` for `count` samples; times fixed, so the file is reproducible."""
    return {
        "count": count,
        "successes": count,
        "failed_to_download": 0,
        "failed_to_resize": 0,
        "duration": 0.0,
        "start_time": 0.0,
        "end_time": 0.0,
        "status_dict": {"success": count},
    }


def export(
    source: Location, files: list[KeptFile], dest: Location, settings: ExportSettings, map_in_order: MapInOrder
) -> dict:
    schema = kept_schema(source, files)
    if schema is not None and "image" not in schema.names:
        raise UserError("kept/ holds no image column: a webdataset export needs the images (output.keep_images: true)")
    layout = Layout.of(settings, schema)
    index_digits = max(INDEX_DIGITS, len(str(settings.shard_rows - 1)))
    if settings.shard_mb is None:
        shards = row_shards(files, settings.shard_rows)
    else:
        # Sizes are measured with 5-digit shard numbers in the keys: exact below 100,000 shards (beyond, a
        # key's json is a byte longer, which may round a member up by one 512-byte block).
        planner = ShardPlanner(settings.shard_rows, int(settings.shard_mb * 1_000_000), archive_size)
        measure = functools.partial(sample_sizes, source, layout, SHARD_DIGITS + index_digits)
        for f, sizes in zip(files, map_in_order(measure, files)):
            planner.add_file(f.name, f.rows, sizes)
        shards = planner.finish()
    digits = max(SHARD_DIGITS, len(str(len(shards) - 1)))
    names = [f"{i:0{digits}d}" for i in range(len(shards))]
    write = functools.partial(write_shard, source, dest, layout, index_digits)
    results = list(map_in_order(write, list(zip(names, shards))))
    samples = sum(r["samples"] for r in results)
    return {
        "shards": len(shards),
        "samples": samples,
        "bytes": sum(r["bytes"] for r in results),
        "pattern": f"{dest_url(dest)}/{{{names[0]}..{names[-1]}}}.tar" if names else None,
        "resize": settings.resize.model_dump() if settings.resize else None,
        "shard_rows": settings.shard_rows,
        "shard_mb": settings.shard_mb,
    }


def describe(summary: dict) -> str:
    if not summary["samples"]:
        return f"webdataset: no kept rows, no tars written to {summary['url']}"
    return (
        f"webdataset: {summary['samples']} samples in {summary['shards']} tars: {summary['pattern']} "
        f"(open_clip: --train-data '{summary['pattern']}' --train-num-samples {summary['samples']})"
    )


def dest_url(dest: Location) -> str:
    protocol = dest.fs.protocol if isinstance(dest.fs.protocol, str) else dest.fs.protocol[0]
    return dest.root if protocol in ("file", "local") else f"{protocol}://{dest.root}"


# ---- samples ------------------------------------------------------------------------------------------


class Layout:
    """What a sample holds: the kept/ columns copied into its metadata, and the image settings."""

    def __init__(self, settings: ExportSettings, columns: list[str], types: dict[str, pa.DataType]):
        self.resize = settings.resize
        self.columns = columns  # the kept/ columns read
        self.extra = [c for c in columns if c not in _IMG2DATASET_SOURCES]  # copied under their own name
        extra_fields = [pa.field(_RENAMED.get(c, c), types[c]) for c in self.extra]
        self.schema = pa.schema([*IMG2DATASET_FIELDS, *extra_fields])

    @classmethod
    def of(cls, settings: ExportSettings, schema: pa.Schema | None) -> "Layout":
        if schema is None:
            return cls(settings, [], {})
        skip = {*REJECTION_COLUMNS, *EMBEDDING_COLUMNS}
        columns = [f.name for f in schema if f.name not in skip]
        return cls(settings, columns, {f.name: f.type for f in schema})

    def sample(self, row: dict, image: bytes, key: str) -> tuple[list[tuple[str, bytes]], dict]:
        """A kept row as tar members (sorted by name) and its metadata."""
        resize = self.resize
        if resize is None:
            exported = export_image(image)
        else:
            exported = export_image(
                image,
                mode=resize.mode,
                size=resize.size,
                fmt=resize.format,
                quality=resize.quality,
                only_if_bigger=resize.only_if_bigger,
            )
        width, height = exported.size or (row.get("width"), row.get("height"))
        caption = row.get("caption") or ""
        meta = {
            "url": row.get("url"),
            "caption": caption,
            "key": key,
            "status": "success",
            "error_message": None,
            "width": width,
            "height": height,
            "original_width": row.get("width"),
            "original_height": row.get("height"),
            "exif": None,
            "sha256": row.get("sha256"),
        }
        for column in self.extra:
            meta[_RENAMED.get(column, column)] = row.get(column)
        members = [
            (f"{key}.{exported.ext}", exported.data),
            (f"{key}.json", json.dumps(_json_ready(meta, self.schema), indent=4).encode()),
            (f"{key}.txt", caption.encode("utf-8")),
        ]
        return sorted(members), meta


def _json_ready(meta: dict, schema: pa.Schema) -> dict:
    """Values as JSON states them: float32 scores by their shortest decimal form, NaN and infinities as null."""
    out = {}
    for name, value in meta.items():
        if isinstance(value, float):
            if not math.isfinite(value):
                value = None
            elif schema.field(name).type == pa.float32():
                value = float(str(np.float32(value)))
        out[name] = value
    return out


def _rows(tables, layout: Layout):
    """(row, image bytes) for every row of the tables."""
    for table in tables:
        images = image_values(table.column("image")).to_pylist()
        for row, image in zip(table.to_pylist(), images):
            if image is None:
                raise UserError(
                    f"kept row {row.get('key')} has no image bytes: a webdataset export needs them (output.keep_images)"
                )
            yield row, image


def sample_sizes(source: Location, layout: Layout, key_digits: int, file: KeptFile) -> np.ndarray:
    """Each row's size in a tar (headers and padding included), for planning shards by size."""
    placeholder = "0" * key_digits
    sizes = []
    for row, image in _rows(read_file(source, file.name, layout.columns), layout):
        members, _ = layout.sample(row, image, placeholder)
        sizes.append(sum(len(member_bytes(name, data)) for name, data in members))
    return np.array(sizes, np.int64)


def write_shard(
    source: Location, dest: Location, layout: Layout, index_digits: int, item: tuple[str, list[Segment]]
) -> dict:
    """One output shard: the tar, then its metadata Parquet and stats."""
    name, segments = item
    metas = []
    with open_for_writing(dest, f"{name}.tar") as f:
        tar = TarWriter(f)
        tables = (t for segment in segments for t in read_segment(source, segment, layout.columns))
        for index, (row, image) in enumerate(_rows(tables, layout)):
            members, meta = layout.sample(row, image, f"{name}{index:0{index_digits}d}")
            for member, data in members:
                tar.add(member, data)
            metas.append(meta)
        tar.close()
    table = pa.Table.from_pylist(metas, schema=layout.schema)
    dest.write_bytes(parquet_bytes(table), f"{name}.parquet")
    dest.write_bytes(json.dumps(shard_stats(len(metas)), indent=4).encode(), f"{name}_stats.json")
    return {"name": name, "samples": len(metas), "bytes": tar.size}
