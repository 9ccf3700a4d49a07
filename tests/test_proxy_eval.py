"""`curate proxy-eval` at a tiny size: the three arms train on the right pairs and the report has its shape."""

from __future__ import annotations

import json

import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner

from curation.cli import main
from curation.lab.proxy_eval import ARMS, POOL_DEFECTS, pool_planters, random_keys

UNDECODABLE = {"truncated_jpeg", "not_an_image"}


def test_pool_planters_carry_the_proxy_shares():
    shares = {p.kind: p.fraction for p in pool_planters()}
    assert shares == {kind: POOL_DEFECTS[kind] for kind in shares}
    assert 0.3 <= sum(shares.values()) <= 0.4


def test_random_keys_are_seeded_and_sized():
    keys = [f"k{i}" for i in range(50)]
    assert random_keys(keys, 20, seed=3) == random_keys(keys, 20, seed=3)
    assert len(random_keys(keys, 20, seed=3)) == 20
    assert random_keys(keys, 20, seed=3) != random_keys(keys, 20, seed=4)


@pytest.mark.ray
def test_proxy_eval_tiny(ray_local, tmp_path):
    out = tmp_path / "proxy"
    args = [
        "proxy-eval",
        "--output",
        str(out),
        "--rows",
        "160",
        "--test-rows",
        "100",
        "--steps",
        "2",
        "--batch-size",
        "16",
    ]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    report = json.loads(lines[-1])
    assert report == json.loads((out / "result.json").read_text())
    for name in ARMS:
        assert any(line.startswith(name) for line in lines), name
        arm = report["arms"][name]
        for metric in ("zero_shot_shape", "zero_shot_colour", "zero_shot_mean", "retrieval_r1_100"):
            assert 0.0 <= arm[metric] <= 1.0

    truth = json.loads((out / "pool" / "truth.json").read_text())
    decodable = sum(label not in UNDECODABLE for label in truth["labels"].values())
    kept = ds.dataset(str(out / "curated" / "kept"), format="parquet").count_rows()
    assert report["arms"]["raw"]["pairs"] == decodable
    assert report["arms"]["curated"]["pairs"] == kept == report["curated_kept"]
    assert report["arms"]["random"]["pairs"] == kept
    assert 0 < kept < decodable
    # the pool is noisy and curation removes most of the noise
    assert report["planted_defect_share"] == pytest.approx(sum(POOL_DEFECTS.values()), abs=0.03)
    assert report["arms"]["curated"]["defect_share"] < report["arms"]["raw"]["defect_share"]
    assert report["steps"] == 2 and report["batch_size"] == 16
