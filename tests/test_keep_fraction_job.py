"""DataComp-style top-k %: `clip.keep_fraction` sets one clip_score threshold over the whole job."""

from __future__ import annotations

import pyarrow.dataset as pads
import pytest

from curation.config import load_config
from curation.runner import run_job

pytestmark = pytest.mark.ray


def test_keep_fraction_threshold_is_job_wide_and_recorded(ray_local, small_world, tmp_path):
    cfg = load_config("pipelines/demo.yaml", ["model.threads=1", "clip.min_score=null", "clip.keep_fraction=0.5"])
    result = run_job(cfg, str(small_world[0]), str(tmp_path / "out"), log=lambda _: None)
    threshold = result.manifest["clip_threshold"]["keep_fraction_threshold"]
    assert threshold is not None
    kept = pads.dataset(str(tmp_path / "out" / "kept")).to_table().to_pylist()
    rejected = pads.dataset(str(tmp_path / "out" / "rejected")).to_table().to_pylist()
    assert len(kept) + len(rejected) == small_world[1]["rows"]
    assert min(r["clip_score"] for r in kept) >= threshold
    low = [r for r in rejected if r["reject_reason"] == "low_clip_score"]
    assert low and all(r["clip_score"] < threshold and r["reject_stage"] == "clip" for r in low)
    # Half of the rows that reached the threshold step survive it (dedup then removes some more).
    eligible = len(low) + len(kept) + sum(r["reject_stage"] == "dedup" for r in rejected)
    assert abs((eligible - len(low)) - eligible / 2) <= 2
