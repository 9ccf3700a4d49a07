"""Image bytes the input shard holds leave the score phase after decode and come back in the write phase."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.config import load_config
from curation.errors import UserError
from curation.io.readers import read_image_column
from curation.io.sources import list_shards
from curation.job import JobPaths, write_final_shard
from curation.schema import conform, record_schema
from curation.stages.release import (
    IN_SOURCE,
    SourceChanged,
    mark_bytes_rewritten,
    mark_source_bytes,
    release_source_bytes,
    restore_source_bytes,
    sha256_each,
)


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG")
    return buf.getvalue()


def rows(images: list[bytes | None]) -> pa.Table:
    return pa.table(
        {
            "key": [f"s/{i}" for i in range(len(images))],
            "image": pa.array(images, pa.binary()),
            "sha256": [hashlib.sha256(b).hexdigest() if b is not None else None for b in images],
        }
    )


def test_only_bytes_the_shard_holds_are_released():
    a, b, c = jpeg(1), jpeg(2), jpeg(3)
    table = mark_source_bytes(rows([a, None, c]))  # row 1: a URL-list row, its bytes come later
    downloaded = table.set_column(1, "image", pa.array([a, b, c], pa.binary()))
    rewritten = mark_bytes_rewritten(downloaded, [2])  # e.g. a face blurred in row 2
    released = release_source_bytes(rewritten)
    assert released.column("image").to_pylist() == [None, b, c]
    assert released.column(IN_SOURCE).to_pylist() == [True, False, False]


def test_a_table_without_the_mark_keeps_its_bytes():
    table = rows([jpeg(1)])
    assert release_source_bytes(table).equals(table)


def test_restore_fills_by_hash_from_the_input_images_in_any_order():
    images = [jpeg(i) for i in range(4)] + [None]
    scored = rows(images)
    scored = scored.set_column(1, "image", pa.array([None, images[1], None, None, None], pa.binary()))
    source = pa.array([None, images[3], images[2], images[1], images[0], images[2]], pa.binary())  # reordered
    restored = restore_source_bytes(scored, source)
    assert restored.column("image").to_pylist() == images  # row 4 had no bytes: still none

    changed = pa.array([images[0], jpeg(9), images[2], images[1]], pa.binary())  # row 3's bytes are gone
    with pytest.raises(SourceChanged, match="s/3"):
        restore_source_bytes(scored, changed)


def test_hashes_are_taken_in_place_of_any_slice_of_binary_values():
    values = pa.array([jpeg(0), None, b"", jpeg(1), jpeg(2)], pa.binary())
    for array in (
        values,
        values.slice(1),
        values.slice(3, 1),
        values.cast(pa.large_binary()),
        pa.nulls(2, pa.binary()),
    ):
        assert sha256_each(array) == [
            hashlib.sha256(v).hexdigest() if v is not None else None for v in array.to_pylist()
        ]


def test_the_image_column_is_read_alone_from_parquet_and_whole_from_other_shards(tmp_path):
    images = [jpeg(i) for i in range(3)]
    plain, hf, tar = tmp_path / "plain", tmp_path / "hf", tmp_path / "tar"
    for folder in (plain, hf, tar):
        folder.mkdir()
    pq.write_table(pa.table({"key": ["a", "b", "c"], "caption": ["x y z"] * 3, "jpg": images}), plain / "00000.parquet")
    structs = pa.array([{"bytes": b, "path": f"{i}.jpg"} for i, b in enumerate(images)])
    pq.write_table(pa.table({"caption": ["x y z"] * 3, "image": structs}), hf / "00000.parquet")
    import tarfile

    with tarfile.open(tar / "00000.tar", "w") as archive:
        for i, data in enumerate(images):
            for ext, payload in (("jpg", data), ("txt", b"a red square")):
                info = tarfile.TarInfo(f"{i:04d}.{ext}")
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    for folder in (plain, hf, tar):
        shard = list_shards(str(folder), "auto")[0]
        assert read_image_column(shard).to_pylist() == images, folder.name
    damaged = plain / "00000.parquet"
    damaged.write_bytes(damaged.read_bytes()[:-20] + b"not a parquet footer")
    shard = list_shards(str(plain), "auto")[0]
    assert read_image_column(shard).to_pylist() == [None]  # the full reader's damage row: nothing to restore


def scored_job(tmp_path, images: list[bytes]):
    """An input shard and its scored shard (image bytes released) as the score phase leaves them."""
    source = tmp_path / "in"
    source.mkdir()
    keys = [f"{i:04d}" for i in range(len(images))]
    pq.write_table(
        pa.table({"key": keys, "caption": ["a red square"] * len(images), "jpg": images}), source / "00000.parquet"
    )
    shard = list_shards(str(source), "auto")[0]
    paths = JobPaths(output_url=str(tmp_path / "out"), work_url=str(tmp_path / "out" / "_work"))
    table = pa.table(
        {
            "key": [f"{shard.shard_id}/{k}" for k in keys],
            "source": [shard.shard_id] * len(images),
            "image": pa.nulls(len(images), pa.binary()),
            "sha256": [hashlib.sha256(b).hexdigest() for b in images],
            "status": ["kept"] * len(images),
        }
    )
    paths.work.write_bytes(pq_bytes(conform(table, record_schema(16))), paths.scored_name(shard.shard_id))
    return shard, paths, source / "00000.parquet"


def pq_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def test_write_phase_puts_the_input_bytes_back(tmp_path):
    images = [jpeg(i) for i in range(3)]
    shard, paths, _ = scored_job(tmp_path, images)
    result = write_final_shard(shard, load_config(None, ()), paths)
    kept = pq.read_table(tmp_path / "out" / "kept" / f"part-{shard.shard_id}.parquet")
    assert result["kept"] == 3
    assert [image["bytes"] for image in kept.column("image").to_pylist()] == images


def test_an_input_changed_since_scoring_is_a_user_error(tmp_path):
    images = [jpeg(i) for i in range(3)]
    shard, paths, input_file = scored_job(tmp_path, images)
    images[1] = jpeg(7)
    keys = [f"{i:04d}" for i in range(3)]
    pq.write_table(pa.table({"key": keys, "caption": ["a red square"] * 3, "jpg": images}), input_file)
    with pytest.raises(UserError, match="changed since it was scored.*delete"):
        write_final_shard(shard, load_config(None, ()), paths)
    assert not (tmp_path / "out" / "kept").exists()
    json.dumps(shard.__dict__)  # a Shard travels to write tasks as a plain row
