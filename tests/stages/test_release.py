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
from curation.io.readers import read_image_column, read_images_at, read_shard
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
        at = read_shard(shard).column("_image_at").to_pylist()  # where the reader found each image
        assert read_images_at(shard, [at[2], at[0]]).to_pylist() == [images[2], images[0]], folder.name
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


def scored_from_input(tmp_path, folder, rejected: set[int] = frozenset()):
    """The scored shard the score phase commits for the first input shard under `folder`, with the reader's
    own columns (where each image is, the input file's version): rows `rejected` rejected by a filter."""
    import hashlib as _hashlib

    from curation.job import commit_scored, read_and_prepare

    shard = list_shards(str(folder), "auto")[0]
    paths = JobPaths(output_url=str(tmp_path / "out"), work_url=str(tmp_path / "out" / "_work"))
    table = read_and_prepare(shard, [], paths, record_schema(16))
    images = table.column("image").to_pylist()
    table = table.set_column(
        table.column_names.index("sha256") if "sha256" in table.column_names else table.num_columns,
        "sha256",
        pa.array([_hashlib.sha256(b).hexdigest() if b is not None else None for b in images], pa.string()),
    )
    status = ["rejected" if i in rejected else s for i, s in enumerate(table.column("status").to_pylist())]
    table = table.set_column(table.column_names.index("status"), "status", pa.array(status))
    commit_scored(shard.shard_id, table, paths, record_schema(16))
    return shard, paths, dict(zip(table.column("key").to_pylist(), images))


def write_tar(path, images: list[bytes]) -> None:
    import tarfile

    with tarfile.open(path, "w") as archive:
        for i, data in enumerate(images):
            for ext, payload in (("jpg", data), ("txt", b"a red square")):
                info = tarfile.TarInfo(f"{i:04d}.{ext}")
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))


def write_input(folder, fmt: str, images: list[bytes]) -> None:
    folder.mkdir()
    if fmt == "webdataset":
        write_tar(folder / "00000.tar", images)
    else:  # several row groups: only those holding kept rows are read
        table = pa.table({"key": [f"{i:04d}" for i in range(len(images))], "caption": ["a red square"] * len(images)})
        pq.write_table(
            table.append_column("jpg", pa.array(images, pa.binary())), folder / "00000.parquet", row_group_size=2
        )


def output_images(tmp_path, part: str, shard) -> dict:
    table = pq.read_table(tmp_path / "out" / part / f"part-{shard.shard_id}.parquet")
    return {
        k: (v["bytes"] if v else None)
        for k, v in zip(table.column("key").to_pylist(), table.column("image").to_pylist())
    }


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_kept_images_are_read_back_by_position_unhashed_and_rejected_ones_not_at_all(tmp_path, monkeypatch, fmt):
    import curation.job as job

    write_input(tmp_path / "in", fmt, [jpeg(i) for i in range(6)])
    shard, paths, source = scored_from_input(tmp_path, tmp_path / "in", rejected={1, 4})
    scored = pq.read_table(tmp_path / "out" / "_work" / "scored" / f"{shard.shard_id}.parquet")
    assert scored.column("image").null_count == 6  # the input holds them: not stored again
    assert None not in scored.column("_image_at").to_pylist()

    def no_hashing(*args, **kwargs):
        raise AssertionError("the input's images were hashed again")

    monkeypatch.setattr(job, "restore_source_bytes", no_hashing)
    asked: list[list[int]] = []
    read_at = job.read_images_at
    monkeypatch.setattr(job, "read_images_at", lambda shard, at, *a: asked.append(at) or read_at(shard, at, *a))
    result = write_final_shard(shard, load_config(None, ()), paths)
    assert (result["kept"], result["rejected"]) == (4, 2)
    kept, rejected = output_images(tmp_path, "kept", shard), output_images(tmp_path, "rejected", shard)
    assert kept == {k: v for k, v in source.items() if k in kept} and len(kept) == 4
    assert set(rejected) == {k for k in source if k not in kept} and set(rejected.values()) == {None}
    assert len(asked) == 1 and len(asked[0]) == 4  # only the kept rows' images were read
    names = pq.read_schema(tmp_path / "out" / "kept" / f"part-{shard.shard_id}.parquet").names
    assert not [n for n in names if n.startswith("_")]  # the bookkeeping columns stay in the work dir

    write_final_shard(shard, load_config(None, ["output.rejected_images=true"]), paths)
    assert output_images(tmp_path, "rejected", shard) == {k: source[k] for k in rejected}


def test_an_input_touched_since_scoring_is_checked_by_hash_and_one_changed_is_refused(tmp_path, monkeypatch):
    import os

    import curation.job as job

    images = [jpeg(i) for i in range(4)]
    write_input(tmp_path / "in", "webdataset", images)
    shard, paths, source = scored_from_input(tmp_path, tmp_path / "in")
    tar = tmp_path / "in" / "00000.tar"
    os.utime(tar, (1_000_000_000, 1_000_000_000))  # same bytes, another mtime (a copy, a touch)
    hashed = []
    restore = job.restore_source_bytes
    monkeypatch.setattr(job, "restore_source_bytes", lambda *a: hashed.append(1) or restore(*a))
    write_final_shard(shard, load_config(None, ()), paths)
    assert hashed and output_images(tmp_path, "kept", shard) == source

    images[2] = jpeg(9)  # another picture under the same member name
    write_tar(tar, images)
    with pytest.raises(UserError, match="changed since it was scored.*delete") as raised:
        write_final_shard(shard, load_config(None, ()), paths)
    assert "\n" not in str(raised.value)
