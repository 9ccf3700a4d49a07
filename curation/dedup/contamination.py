"""Eval decontamination: the images of evaluation sets, hashed and embedded once, for the dedup phase.

An eval set is img2dataset output (webdataset tars or Parquet with image bytes) or a folder of image
files. Its images go through the pipeline's own decode and embedding stages (same model, same
preprocessing), so a training pair that copies, resizes or re-renders an eval image is caught in the
cluster step and rejected as `eval_contamination`, with dup_of naming the eval image.
"""

from __future__ import annotations

import posixpath

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from curation.errors import UserError
from curation.io.readers import IMAGE_EXTENSIONS, RAW_SCHEMA, read_shard
from curation.io.sources import list_shards
from curation.schema import Status

EVAL_COLUMNS = ["key", "sha256", "phash", "img_emb"]


def read_eval_images(url: str, setting: str = "dedup.eval_sets") -> pa.Table:
    """Raw records (key `eval:<set>/<name>`) of every image in one eval set (or reference set: `setting`)."""
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(root):
        raise UserError(f"{setting} entry {url} does not exist: give a folder of images or img2dataset output")
    name = posixpath.basename(root.rstrip("/")) or "eval"
    files = sorted(p for p in fs.find(root) if p.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS)
    if files:
        images = [fs.cat_file(p) for p in files]
        keys = [f"eval:{name}/{posixpath.relpath(p, root)}" for p in files]
    else:
        tables = [read_shard(shard) for shard in list_shards(url)]
        table = pa.concat_tables(tables) if tables else RAW_SCHEMA.empty_table()
        images = table.column("image").to_pylist()
        keys = [f"eval:{name}/{k}" for k in table.column("key").to_pylist()]
    n = len(images)
    return pa.table(
        {
            "key": keys,
            "source": [f"eval:{name}"] * n,
            "url": [None] * n,
            "caption": ["eval image"] * n,
            "image": images,
            "status": [Status.KEPT.value] * n,
            "reject_reason": [None] * n,
            "reject_stage": [None] * n,
        },
        schema=RAW_SCHEMA,
    )


def embed_eval_sets(urls: list[str], stages: list, setting: str = "dedup.eval_sets") -> pa.Table | None:
    """Hash and embed the eval sets with `stages` (decode, then embed); undecodable images are skipped."""
    if not urls:
        return None
    table = pa.concat_tables([read_eval_images(url, setting) for url in urls])
    for stage in stages:
        stage.setup()
        table = stage.process_batch(table)
    usable = pc.and_(pc.equal(table.column("status"), Status.KEPT.value), pc.is_valid(table.column("img_emb")))
    return table.filter(usable).select(EVAL_COLUMNS).sort_by("key")
