"""infra/gpu-bench.sh, the GPU node's throughput checks, run at its smallest sizes on CPU: the same
commands and options a GPU run uses, so a GPU run does not fail on them."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_gpu_bench_script_runs_every_check_and_keeps_each_json_line(tmp_path):
    curate = tmp_path / "curate"  # the CLI of this checkout, whatever is on PATH
    curate.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m curation.cli "$@"\n')
    curate.chmod(curate.stat().st_mode | stat.S_IEXEC)
    results = tmp_path / "results.jsonl"
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        DEVICE="cpu",
        SCALE="0",
        LARGE="curation-tiny",
        SMALL="curation-tiny",
        RESULTS=str(results),
        CURATE=str(curate),
        STEP_TIMEOUT="200",
    )
    run = subprocess.run(
        ["bash", str(REPO / "infra/gpu-bench.sh")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = [json.loads(line) for line in results.read_text().splitlines()]
    assert [f["bench"] for f in figures] == ["embed", "embed", "decode", "pipeline"]
    assert all(f["ratio"] > 0 for f in figures)
    assert figures[2]["device_img_s_per_core"] > 0  # the device decoder was timed (on CPU here)
    assert figures[3]["arch"] == "curation-tiny" and figures[3]["stages"]["decode"] > 0


@pytest.mark.slow
def test_gpu_bench_script_records_a_failed_step_and_fails(tmp_path):
    curate = tmp_path / "curate"
    curate.write_text("#!/bin/sh\necho 'error: no such thing' >&2\nexit 2\n")
    curate.chmod(curate.stat().st_mode | stat.S_IEXEC)
    results = tmp_path / "results.jsonl"
    env = dict(os.environ, DEVICE="cpu", SCALE="0", RESULTS=str(results), CURATE=str(curate))
    run = subprocess.run(
        ["bash", str(REPO / "infra/gpu-bench.sh")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    figures = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(figures) == 4 and all(f["failed"] and f["exit"] == 2 for f in figures)
