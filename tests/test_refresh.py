"""A scheduled refresh: month 2 overlaps month 1 and is deduplicated against month 1's kept rows."""

from __future__ import annotations

import shutil

import pyarrow.dataset as pads
import pytest

from curation.config import load_config
from curation.dedup.state import read_chain
from curation.io.commit import Location
from curation.lab.synth import generate
from curation.runner import run_job

pytestmark = pytest.mark.ray


def curate(input_dir, output_dir, *overrides):
    cfg = load_config("pipelines/demo.yaml", ["model.threads=1", *overrides])
    return run_job(cfg, str(input_dir), str(output_dir), log=lambda _: None)


def state_keys(output):
    """The keys of the rows an output's own _state/kept/ files hold."""
    return pads.dataset(str(output / "_state" / "kept")).to_table(columns=["key"]).column("key").to_pylist()


def rows(output, part):
    return pads.dataset(str(output / part)).to_table(columns=["key", "reject_reason", "dup_of", "dup_kind"]).to_pylist()


def test_month_two_excludes_month_one_duplicates(ray_local, tmp_path):
    month1, month2 = tmp_path / "month1", tmp_path / "month2"
    generate(str(month1), rows=160, seed=31, shard_size=80)
    generate(str(month2), rows=160, seed=32, shard_size=80)
    # Month 2 re-crawls one of month 1's shards under a new name.
    for suffix in (".tar", ".parquet"):
        shutil.copy(month1 / f"00001{suffix}", month2 / f"00099{suffix}")

    first = curate(month1, tmp_path / "out1")
    assert (tmp_path / "out1" / "_state" / "centroids.parquet").exists()
    kept1 = {r["key"] for r in rows(tmp_path / "out1", "kept")}
    second = curate(month2, tmp_path / "out2", f"dedup.against=['{tmp_path / 'out1'}']")

    rejected2 = {r["key"]: r for r in rows(tmp_path / "out2", "rejected")}
    overlap = {f"00099/{k.split('/', 1)[1]}": k for k in kept1 if k.startswith("00001/")}
    assert overlap
    for new_key, old_key in overlap.items():
        row = rejected2[new_key]
        assert row["reject_reason"] == "duplicate_of_previous_refresh", row
        assert row["dup_kind"] == "previous_refresh"
    previous = {k for k, r in rejected2.items() if r["reject_reason"] == "duplicate_of_previous_refresh"}
    assert all(k.startswith("00099/") for k in previous)  # nothing outside the overlap
    # The month-1 copies point at month-1 rows that were kept.
    assert {rejected2[k]["dup_of"] for k in previous} <= kept1
    # Month 1's output is untouched; month 2's state holds month 2's kept rows and builds on month 1's.
    assert first.manifest["funnel"]["kept"] == len(kept1)
    state1, state2 = (state_keys(tmp_path / out) for out in ("out1", "out2"))
    kept2 = [r["key"] for r in rows(tmp_path / "out2", "kept")]
    assert sorted(state1) == sorted(kept1) and sorted(state2) == sorted(kept2)
    assert read_chain(Location.of(str(tmp_path / "out2"))) == [str(tmp_path / "out1")]
    assert second.manifest["funnel"]["input"] == 240
