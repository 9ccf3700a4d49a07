import json

import numpy as np
from click.testing import CliRunner

from curation.lab.bench.dedup import dedup_command, make_planted_embeddings, run_dedup_bench

KEYS = {
    "bench",
    "n",
    "dim",
    "seconds",
    "peak_rss_gib",
    "precision",
    "recall",
    "scaling_ratio",
    "k",
    "steps",
    "steps_small",
}
STEPS = {"fit_s", "assign_s", "clusters_s"}


def test_command_ends_with_one_json_line():
    result = CliRunner().invoke(dedup_command, ["--n", "5000", "--dim", "64", "--seed", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) >= 2  # a readable summary first
    figures = json.loads(lines[-1])
    assert set(figures) == KEYS
    assert figures["bench"] == "dedup" and figures["n"] == 5000 and figures["dim"] == 64
    assert figures["precision"] >= 0.95 and figures["recall"] >= 0.95
    assert figures["seconds"] > 0 and figures["peak_rss_gib"] > 0
    assert figures["scaling_ratio"] is None
    assert set(figures["steps"]) == STEPS and sum(figures["steps"].values()) <= figures["seconds"] * 1.01


def test_scaling_runs_a_tenth_first():
    figures = run_dedup_bench(5000, 32, scaling=True, seed=0)
    assert set(figures) == KEYS
    assert figures["scaling_ratio"] > 0
    assert set(figures["steps_small"]) == STEPS and figures["k"] == 2


def test_planted_data_is_what_the_docstring_says():
    data = make_planted_embeddings(n=3000, dim=64, seed=2)
    assert data.emb.dtype == np.float16 and data.emb.shape == (3000, 64)
    np.testing.assert_allclose(np.linalg.norm(data.emb.astype(np.float32), axis=1), 1.0, atol=2e-3)
    assert 0.05 <= data.planted_copies / 3000 <= 0.1
    assert len(set(data.keys.to_pylist())) == 3000
    x = data.emb.astype(np.float32)
    sims = x @ x.T
    same = (data.group[:, None] == data.group[None, :]) & (data.group[:, None] >= 0)
    np.fill_diagonal(same, False)
    distinct = ~same
    np.fill_diagonal(distinct, False)
    assert sims[same].min() >= 0.995
    assert sims[distinct].max() < 0.95


def test_scale_bench_runs_the_phases_in_a_fresh_driver_and_scores_the_planted_copies():
    """`curate bench scale` on a few thousand rows: its driver (a child process with its own local Ray)
    runs the real dedup and write phases; the planted copies are found and the figures are printed."""
    from curation.lab.bench.scale import run_scale_bench

    lines: list[str] = []
    result = run_scale_bench(3000, 3, 16, scaling=False, log=lines.append)
    n = result["n"]
    assert n["rows"] == 3000 and n["shards"] == 3
    assert n["precision"] >= 0.99 and n["recall"] >= 0.95 and n["missed"]["exact"] == 0
    assert n["decisions"] >= 0.95 * 0.2 * 3000 and n["kept"] + n["decisions"] == 3000
    assert 50 < n["driver_peak_mb"] < 4000 and "driver peak" in lines[0]


def test_scale_bench_plants_the_copies_it_says(tmp_path):
    import pyarrow.dataset as pads

    from curation.lab.bench.scale import COPIES, fake_scored_shards

    shards, copies = fake_scored_shards(tmp_path, 2000, 4, 8, seed=1)
    table = pads.dataset(str(tmp_path / "out" / "_work" / "scored"), format="parquet").to_table()
    assert table.num_rows == 2000 and len(shards) == 4
    assert {kind: sum(1 for k in copies.values() if k == kind) for kind in COPIES} == {
        kind: int(2000 * share) for kind, share in COPIES.items()
    }
    sha = dict(zip(table.column("key").to_pylist(), table.column("sha256").to_pylist()))
    exact = [key for key, kind in copies.items() if kind == "exact"]
    assert sum(list(sha.values()).count(sha[key]) == 2 for key in exact) == len(exact)  # each with its original
