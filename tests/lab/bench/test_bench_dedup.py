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
