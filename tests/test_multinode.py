"""The same job on a simulated 3-node cluster (nodes with different resources) writes the same bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_fault_tolerance import SETTINGS, kept_bytes, reference, world  # noqa: F401 - shared fixtures

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parent / "multinode_job.py"
REPO = SCRIPT.parent.parent


def run_on_cluster(input_dir: Path, output: Path, *flags: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)
    args = [sys.executable, str(SCRIPT), str(input_dir), str(output), *flags, *SETTINGS]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_three_node_cluster_gives_the_same_bytes(world, reference, tmp_path):  # noqa: F811 - the shared fixtures
    out = run_on_cluster(world[0], tmp_path / "out")
    assert "removed=False" in out
    assert kept_bytes(tmp_path / "out") == reference


def test_losing_a_node_mid_run_gives_the_same_bytes(world, reference, tmp_path):  # noqa: F811 - the shared fixtures
    out = run_on_cluster(world[0], tmp_path / "out", "--remove-node")
    assert "removed=True" in out
    assert kept_bytes(tmp_path / "out") == reference
