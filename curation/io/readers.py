"""Read one input shard into an Arrow table of raw records (key, source, url, caption, image).

Every sample found becomes a row, also an incomplete one: a sample without image bytes or caption is
rejected here with a reason, never dropped. Keys come from the shard id and the sample's own name.
"""

from __future__ import annotations

import json
import posixpath
import tarfile

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from curation.io.sources import IMAGE_COLUMNS, Shard
from curation.schema import RejectReason, Stage, Status

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
CAPTION_COLUMNS = ("caption", "txt", "text")

RAW_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("caption", pa.string()),
        ("image", pa.binary()),
        ("status", pa.string()),
        ("reject_reason", pa.string()),
        ("reject_stage", pa.string()),
    ]
)


def read_shard(shard: Shard, storage_options: dict | None = None) -> pa.Table:
    reader = _read_tar if shard.format == "webdataset" else _read_parquet
    samples = reader(shard, storage_options or {})
    return _to_table(shard, samples)


def _read_tar(shard: Shard, storage_options: dict) -> list[dict]:
    samples: dict[str, dict] = {}
    with fsspec.open(shard.url, "rb", **storage_options) as raw:
        # Streaming mode: no seeks, so it works the same on object stores.
        with tarfile.open(fileobj=raw, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = posixpath.basename(member.name)
                stem, dot, ext = name.partition(".")
                if not dot or not stem:
                    continue
                payload = tar.extractfile(member).read()
                sample = samples.setdefault(stem, {"name": stem})
                ext = ext.lower()
                if ext in IMAGE_EXTENSIONS and "image" not in sample:
                    sample["image"] = payload
                elif ext in ("txt", "caption"):
                    sample["caption"] = payload.decode("utf-8", errors="replace")
                elif ext == "json":
                    sample["url"] = _url_from_json(payload)
    return list(samples.values())


def _url_from_json(payload: bytes) -> str | None:
    try:
        meta = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    url = meta.get("url") if isinstance(meta, dict) else None
    return url if isinstance(url, str) else None


def _read_parquet(shard: Shard, storage_options: dict) -> list[dict]:
    with fsspec.open(shard.url, "rb", **storage_options) as f:
        table = pq.read_table(f)
    names = table.column_names
    image_col = next(c for c in IMAGE_COLUMNS if c in names)
    caption_col = next((c for c in CAPTION_COLUMNS if c in names), None)
    images = table.column(image_col).to_pylist()
    captions = table.column(caption_col).to_pylist() if caption_col else [None] * table.num_rows
    urls = table.column("url").to_pylist() if "url" in names else [None] * table.num_rows
    keys = table.column("key").to_pylist() if "key" in names else [None] * table.num_rows
    samples = []
    for i, (key, image, caption, url) in enumerate(zip(keys, images, captions, urls)):
        name = str(key) if key is not None else f"row{i:09d}"
        samples.append({"name": name, "image": image, "caption": caption, "url": url})
    return samples


def _to_table(shard: Shard, samples: list[dict]) -> pa.Table:
    keys, statuses, reasons, stages = [], [], [], []
    for sample in samples:
        keys.append(f"{shard.shard_id}/{sample['name']}")
        reason = _missing_part(sample)
        statuses.append(Status.REJECTED.value if reason else Status.KEPT.value)
        reasons.append(reason.value if reason else None)
        stages.append(Stage.READ.value if reason else None)
    columns = {
        "key": keys,
        "source": [shard.shard_id] * len(samples),
        "url": [s.get("url") for s in samples],
        "caption": [s.get("caption") for s in samples],
        "image": [s.get("image") for s in samples],
        "status": statuses,
        "reject_reason": reasons,
        "reject_stage": stages,
    }
    return pa.table(columns, schema=RAW_SCHEMA)


def _missing_part(sample: dict) -> RejectReason | None:
    if sample.get("image") is None:
        return RejectReason.MISSING_IMAGE
    if sample.get("caption") is None:
        return RejectReason.MISSING_CAPTION
    return None
