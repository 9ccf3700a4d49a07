"""The manifest's per-shard entries: a Parquet file beside _manifest.json, named and checksummed by it."""

from __future__ import annotations

import hashlib
import json

import duckdb
import pyarrow.parquet as pq
import pytest

from curation.errors import UserError
from curation.io.commit import Location
from curation.io.sources import Shard
from curation.manifest import SHARDS_FILE, inputs_digest, read_shards, shards_table, write_shards


def shards_and_results(n: int) -> tuple[list[Shard], list[dict]]:
    shards = [
        Shard(
            shard_id=f"{i:05d}",
            url=f"https://user:pw@example.com/in/{i:05d}.tar?X-Amz-Signature=s",
            format="webdataset",
        )
        for i in range(n)
    ]
    results = [
        {
            "shard_id": f"{i:05d}",
            "rows": 10 + i,
            "kept": 7,
            "rejected": 3 + i,
            "kept_sha256": hashlib.sha256(b"k%d" % i).hexdigest(),
            "rejected_sha256": hashlib.sha256(b"r%d" % i).hexdigest(),
            "reasons": {"exact_duplicate": 2, "low_clip_score": 1 + i},
        }
        for i in range(n)
    ]
    return shards[::-1], results  # any order in: rows sorted by shard id out


def test_shard_file_is_checksummed_sorted_and_readable_by_duckdb(tmp_path):
    shards, results = shards_and_results(1200)
    out = Location.of(str(tmp_path))
    entry = write_shards(out, shards_table(shards, results))

    data = (tmp_path / SHARDS_FILE).read_bytes()
    assert entry == {"name": SHARDS_FILE, "sha256": hashlib.sha256(data).hexdigest(), "rows": 1200}
    table = read_shards(out, {"shards_file": entry})
    assert table.column("shard_id").to_pylist() == sorted(s.shard_id for s in shards)
    assert table.column("url")[0].as_py() == "https://example.com/in/00000.tar?X-Amz-Signature=***"
    first = table.slice(0, 1).to_pylist()[0]
    assert first["rows"] == first["kept"] + first["rejected"] == 10
    assert json.loads(first["reasons"]) == {"exact_duplicate": 2, "low_clip_score": 1}
    rows, kept, rejected = (
        duckdb.connect()
        .execute(f"SELECT sum(rows), sum(kept), sum(rejected) FROM '{tmp_path / SHARDS_FILE}'")
        .fetchone()
    )
    assert (rows, kept, rejected) == (
        sum(r["rows"] for r in results),
        sum(r["kept"] for r in results),
        sum(r["rejected"] for r in results),
    )
    # The same results give the same bytes (a re-run rewrites the same manifest).
    assert write_shards(out, shards_table(shards[::-1], results))["sha256"] == entry["sha256"]
    assert pq.read_metadata(tmp_path / SHARDS_FILE).num_rows == 1200


def test_a_changed_or_missing_shard_file_is_one_line(tmp_path):
    shards, results = shards_and_results(3)
    out = Location.of(str(tmp_path))
    manifest = {"shards_file": write_shards(out, shards_table(shards, results))}
    table = pq.read_table(tmp_path / SHARDS_FILE)
    pq.write_table(table.slice(1), tmp_path / SHARDS_FILE)  # a shard's row lost
    with pytest.raises(UserError, match="does not match the sha256"):
        read_shards(out, manifest)
    (tmp_path / SHARDS_FILE).unlink()
    with pytest.raises(UserError, match="is missing"):
        read_shards(out, manifest)
    with pytest.raises(UserError, match="names no _manifest_shards.parquet"):
        read_shards(out, {"shards": results})  # an earlier version's manifest


def test_inputs_digest_ignores_credentials_and_sees_order_and_content():
    urls = [f"s3://bucket/in/{i:05d}.tar" for i in range(3)]
    assert inputs_digest(urls) == inputs_digest(u.replace("s3://", "s3://key:secret@") for u in urls)
    assert inputs_digest(urls) != inputs_digest(urls[::-1])
    assert inputs_digest(urls) != inputs_digest(urls[:2])
    assert inputs_digest(["ab", "c"]) != inputs_digest(["a", "bc"])
