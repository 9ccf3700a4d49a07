"""A chain of three refreshes: each run's _state/ holds only the rows it kept and names the earlier outputs it
builds on; folding them into one base (in a run, or by `curate compact-state`) changes no decision."""

from __future__ import annotations

import hashlib
import shutil

import pyarrow.dataset as pads
import pytest
from click.testing import CliRunner

from curation.cli import main
from curation.config import load_config
from curation.dedup.state import read_chain, state_chain
from curation.errors import UserError
from curation.io.commit import Location
from curation.lab.synth import generate
from curation.runner import run_job

pytestmark = pytest.mark.ray


def curate(input_dir, output_dir, *overrides):
    cfg = load_config("pipelines/demo.yaml", ["model.threads=1", *overrides])
    return run_job(cfg, str(input_dir), str(output_dir), log=lambda _: None)


def decisions(output):
    """Every row's (key, status, reject_reason, dup_of), by key."""
    columns = ["key", "status", "reject_reason", "dup_of"]
    found = [
        r
        for part in ("kept", "rejected")
        for r in pads.dataset(str(output / part)).to_table(columns=columns).to_pylist()
    ]
    return sorted(found, key=lambda r: r["key"])


def state_keys(output):
    return sorted(pads.dataset(str(output / "_state" / "kept")).to_table(columns=["key"]).column("key").to_pylist())


def kept_keys(output):
    return pads.dataset(str(output / "kept")).to_table(columns=["key"]).column("key").to_pylist()


def digests(folder):
    return {
        p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_refresh_state_is_append_only_and_compaction_keeps_the_decisions(ray_local, tmp_path):
    months = [tmp_path / f"month{i}" for i in (1, 2, 3)]
    for seed, month in enumerate(months, start=61):
        generate(str(month), rows=120, seed=seed, shard_size=40)
    for suffix in (".tar", ".parquet"):  # month 2 re-crawls a month-1 shard; month 3 one of each earlier month
        shutil.copy(months[0] / f"00001{suffix}", months[1] / f"00091{suffix}")
        shutil.copy(months[0] / f"00002{suffix}", months[2] / f"00092{suffix}")
        shutil.copy(months[1] / f"00000{suffix}", months[2] / f"00093{suffix}")
    out1, out2, out3, folded = (tmp_path / name for name in ("out1", "out2", "out3", "out3-folded"))
    curate(months[0], out1)
    curate(months[1], out2, f"dedup.against=['{out1}']")
    before = {out: digests(out) for out in (out1, out2)}
    curate(months[2], out3, f"dedup.against=['{out2}']")

    # The third run wrote only its own kept rows, named the chain, and left the earlier outputs as they were.
    assert {out: digests(out) for out in (out1, out2)} == before
    assert state_keys(out3) == sorted(kept_keys(out3))
    assert read_chain(Location.of(str(out3))) == [str(out1), str(out2)]
    assert sum(len(state_keys(out)) for out in (out1, out2, out3)) == sum(
        len(kept_keys(out)) for out in (out1, out2, out3)
    )
    previous = {r["key"]: r["dup_of"] for r in decisions(out3) if r["reject_reason"] == "duplicate_of_previous_refresh"}
    assert {k for k in previous if k.startswith("00092/")} and {k for k in previous if k.startswith("00093/")}
    assert set(previous.values()) <= set(kept_keys(out1)) | set(kept_keys(out2))  # both depths of the chain

    # A run whose chain outgrows dedup.state_compact_after folds it into a base: the same decisions.
    curate(months[2], folded, f"dedup.against=['{out2}']", "dedup.state_compact_after=1")
    assert decisions(folded) == decisions(out3)
    assert read_chain(Location.of(str(folded))) == []
    own, base = (sum(f.stat().st_size for f in (out / "_state" / "kept").glob("*.parquet")) for out in (out3, folded))
    assert own < base * 0.6  # the appended month wrote its third of the rows, not all of them
    everything = sorted(k for out in (out1, out2, out3) for k in kept_keys(out))
    assert state_keys(folded) == everything

    # `curate compact-state` folds the append-only output into the same bytes.
    result = CliRunner().invoke(main, ["compact-state", str(out3)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "folded 2 earlier outputs" in result.output
    assert digests(out3 / "_state") == digests(folded / "_state")

    # An earlier output of a chain deleted before compaction: a refresh against it stops with the fix.
    shutil.rmtree(out1)
    with pytest.raises(UserError, match=f"builds on the earlier output {out1}, which is missing.*compact-state"):
        state_chain([str(out2)])
    assert state_chain([str(out3)]) == [str(out3)]  # the compacted output needs nothing before it
