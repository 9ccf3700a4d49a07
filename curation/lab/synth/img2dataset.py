"""Writers for the layouts img2dataset produces, byte-identical for the same samples.

webdataset: `<out>/NNNNN.tar` with `<key>.jpg`, `<key>.json`, `<key>.txt` per sample (the order
webdataset's TarWriter uses), `<out>/NNNNN.parquet` with the per-sample metadata and no image.
parquet:    `<out>/NNNNN.parquet` with the metadata columns plus the image bytes in `jpg`.
Both:       `<out>/NNNNN_stats.json`, img2dataset's shard statistics.
Keys are img2dataset's: 5 digits of shard id, then 4 digits of the sample's index in the shard.
Tars are written by the product's deterministic tar writer (curation.io.tar), with webdataset's owner
name, and the stats are the webdataset export's (curation.io.sinks.webdataset.shard_stats).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.io.sinks.webdataset import IMG2DATASET_FIELDS, shard_stats
from curation.io.tar import TarWriter

URL_PREFIX = "https://synthetic.invalid/img/"
MAX_SHARD_SIZE = 10_000  # the 4 index digits of a key
TAR_OWNER = "bigdata"  # what webdataset's TarWriter writes as user and group name

METADATA_SCHEMA = IMG2DATASET_FIELDS  # img2dataset's metadata columns, as the webdataset export writes them
PARQUET_SCHEMA = METADATA_SCHEMA.append(pa.field("jpg", pa.binary()))
_OWN_FILE = re.compile(r"^\d{5}(\.tar|\.parquet|_stats\.json)$")


@dataclass(frozen=True, kw_only=True)
class Sample:
    key: str
    caption: str
    payload: bytes
    size: tuple[int, int] | None  # (width, height) of a decodable payload, else None


def shard_name(shard: int) -> str:
    return f"{shard:05d}"


def sample_key(shard: int, index: int) -> str:
    return f"{shard:05d}{index:04d}"


def is_own_file(name: str) -> bool:
    """Whether a file name is one these writers produce (and may overwrite)."""
    return bool(_OWN_FILE.match(name))


def metadata(sample: Sample) -> dict:
    """img2dataset's per-sample metadata, in its column order."""
    width, height = sample.size if sample.size else (None, None)
    return {
        "url": f"{URL_PREFIX}{sample.key}.jpg",
        "caption": sample.caption,
        "key": sample.key,
        "status": "success",
        "error_message": None,
        "width": width,
        "height": height,
        "original_width": width,
        "original_height": height,
        "exif": None,
        "sha256": hashlib.sha256(sample.payload).hexdigest(),
    }


def write_webdataset_shard(out_dir: Path, name: str, samples: list[Sample]) -> None:
    metas = [metadata(s) for s in samples]
    with open(out_dir / f"{name}.tar", "wb") as f:
        tar = TarWriter(f, owner=TAR_OWNER)
        for sample, meta in zip(samples, metas):
            members = {
                "jpg": sample.payload,
                "json": json.dumps(meta, indent=4).encode(),
                "txt": sample.caption.encode(),
            }
            for ext, data in members.items():
                tar.add(f"{sample.key}.{ext}", data)
        tar.close()
    _write_parquet(out_dir / f"{name}.parquet", metas, METADATA_SCHEMA)
    _write_stats(out_dir, name, len(samples))


def write_parquet_shard(out_dir: Path, name: str, samples: list[Sample]) -> None:
    rows = [{**metadata(s), "jpg": s.payload} for s in samples]
    _write_parquet(out_dir / f"{name}.parquet", rows, PARQUET_SCHEMA)
    _write_stats(out_dir, name, len(samples))


WRITERS: dict[str, Callable[[Path, str, list[Sample]], None]] = {
    "webdataset": write_webdataset_shard,
    "parquet": write_parquet_shard,
}


def _write_parquet(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _write_stats(out_dir: Path, name: str, count: int) -> None:
    """img2dataset's `<shard>_stats.json`; times are fixed so the file is reproducible."""
    (out_dir / f"{name}_stats.json").write_text(json.dumps(shard_stats(count), indent=4))
