"""`curate refresh`: dated outputs under one root, each deduplicated against the latest complete one."""

from __future__ import annotations

import hashlib
import json
import shutil

import pyarrow.dataset as pads
import pytest
from click.testing import CliRunner

from curation.cli import main
from curation.errors import UserError
from curation.lab.synth import generate
from curation.refresh import parse_date, previous_output


def test_previous_output_is_the_latest_complete_earlier_one(tmp_path):
    for name, complete in (("2026-08-01", True), ("2026-09-01", True), ("2026-10-01", False), ("2026-12-01", True)):
        (tmp_path / name).mkdir()
        if complete:
            (tmp_path / name / "_SUCCESS").write_bytes(b"")
    (tmp_path / "notes").mkdir()
    assert previous_output(str(tmp_path), "2026-11-01") == f"{tmp_path}/2026-09-01"  # 10-01 died: skipped
    assert previous_output(str(tmp_path), "2026-08-01") is None  # nothing before the first
    assert previous_output(str(tmp_path / "missing"), "2026-11-01") is None


@pytest.mark.parametrize("text", ["2026-13-01", "yesterday", "2026-1-1"])
def test_bad_dates_name_the_format(text):
    with pytest.raises(UserError, match="YYYY-MM-DD"):
        parse_date(text)


def _digests(folder):
    return {
        p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.ray
def test_two_monthly_refreshes_through_the_cli(ray_local, tmp_path):
    month1, month2, root = tmp_path / "in-10", tmp_path / "in-11", tmp_path / "refreshes"
    generate(str(month1), rows=160, seed=41, shard_size=80)
    generate(str(month2), rows=160, seed=42, shard_size=80)
    for suffix in (".tar", ".parquet"):  # month 2 re-crawls one of month 1's shards under a new name
        shutil.copy(month1 / f"00000{suffix}", month2 / f"00077{suffix}")

    def refresh(input_dir, date):
        args = [
            "refresh",
            "pipelines/demo.yaml",
            "--input",
            str(input_dir),
            "--outputs",
            str(root),
            "--date",
            date,
            "--set",
            "model.threads=1",
        ]
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert "nothing (first refresh)" in refresh(month1, "2026-10-01")
    before = _digests(root / "2026-10-01")
    assert f"against {root}/2026-10-01" in refresh(month2, "2026-11-01")
    assert _digests(root / "2026-10-01") == before  # the earlier refresh is only read

    kept1 = set(pads.dataset(str(root / "2026-10-01" / "kept")).to_table(columns=["key"]).column("key").to_pylist())
    rejected2 = (
        pads.dataset(str(root / "2026-11-01" / "rejected"))
        .to_table(columns=["key", "reject_reason", "dup_of"])
        .to_pylist()
    )
    previous = {r["key"] for r in rejected2 if r["reject_reason"] == "duplicate_of_previous_refresh"}
    overlap = {f"00077/{k.split('/', 1)[1]}" for k in kept1 if k.startswith("00000/")}
    assert overlap and overlap <= previous  # every re-crawled row month 1 kept
    # ... and outside the re-crawled shard (whose rows month 1 rejected as copies of rows in other month-1
    # shards are copies of month-1 kept rows too) only rows whose scene month 1 also drew: the same
    # description in another layout, a semantic duplicate by the world's own definition
    scenes1, scenes2 = (json.loads((month / "truth.json").read_text())["scenes"] for month in (month1, month2))
    dup_of = {r["key"]: r["dup_of"] for r in rejected2}
    for key in sorted(k for k in previous if not k.startswith("00077/")):
        assert scenes2[key] == scenes1[dup_of[key]], (key, dup_of[key])
