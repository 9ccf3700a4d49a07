"""Killed drivers and workers lose no row and duplicate none: the re-run writes the same bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pyarrow.dataset as pads
import pytest

from curation.config import load_config
from curation.runner import run_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SETTINGS = ["model.threads=1"]
REPO = Path(__file__).resolve().parent.parent


def kept_bytes(output: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((output / "kept").glob("*.parquet"))}


def curate_here(input_dir: Path, output: Path):
    cfg = load_config(REPO / "pipelines/demo.yaml", SETTINGS)
    return run_job(cfg, str(input_dir), str(output), log=lambda _: None)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from curation.lab.synth import generate

    root = tmp_path_factory.mktemp("fault-world")
    truth = generate(str(root), rows=240, seed=21, shard_size=8)  # 30 small shards: long phases
    return root, truth


@pytest.fixture(scope="module")
def reference(ray_local, world, tmp_path_factory):
    output = tmp_path_factory.mktemp("reference") / "out"
    curate_here(world[0], output)
    return kept_bytes(output)


def _kill_tree_marked(mark: str) -> None:
    """SIGKILL every process carrying our marker: the driver and the Ray processes it started."""
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("CURATION_TEST_MARK") == mark:
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue


def run_cli_and_kill(input_dir: Path, output: Path, ready, timeout: float = 240) -> bool:
    """Run `curate run` in a subprocess and SIGKILL it (and its Ray) as soon as `ready()` holds."""
    mark = uuid.uuid4().hex
    env = dict(os.environ, CURATION_TEST_MARK=mark, PYTHONPATH=str(REPO))
    args = [sys.executable, "-m", "curation.cli", "run", str(REPO / "pipelines/demo.yaml")]
    args += ["--input", str(input_dir), "--output", str(output)]
    for item in SETTINGS:
        args += ["--set", item]
    proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = False
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _kill_tree_marked(mark)
    return killed


def check_complete(output: Path, truth: dict) -> None:
    kept = pads.dataset(str(output / "kept")).to_table(columns=["key"]).column("key").to_pylist()
    rejected = pads.dataset(str(output / "rejected")).to_table(columns=["key"]).column("key").to_pylist()
    assert sorted(kept + rejected) == sorted(truth["labels"])  # nothing lost, nothing twice


def test_driver_killed_while_scoring(world, reference, tmp_path):
    output = tmp_path / "out"
    scored = output / "_work" / "scored"
    killed = run_cli_and_kill(world[0], output, lambda: len(list(scored.glob("*.parquet"))) >= 3)
    assert killed and not (output / "_SUCCESS").exists()
    result = curate_here(world[0], output)
    assert result.manifest["resume"]["attempt"] == 2
    assert result.manifest["resume"]["shards_scored_in_earlier_attempts"] >= 3
    assert kept_bytes(output) == reference
    check_complete(output, world[1])


def test_driver_killed_while_writing(world, reference, tmp_path):
    output = tmp_path / "out"
    kept = output / "kept"
    killed = run_cli_and_kill(world[0], output, lambda: kept.exists() and any(kept.glob("*.parquet")))
    assert killed and not (output / "_SUCCESS").exists()
    assert len(list(kept.glob("*.parquet"))) < len(reference)  # really stopped midway through writing
    result = curate_here(world[0], output)
    assert result.manifest["resume"]["shards_scored_in_earlier_attempts"] == len(reference)
    assert kept_bytes(output) == reference
    check_complete(output, world[1])


def test_worker_killed_during_embedding(world, reference, tmp_path):
    output = tmp_path / "out"
    scored = output / "_work" / "scored"
    killed: list[int] = []

    def kill_embedding_actor():
        deadline = time.time() + 180
        while time.time() < deadline and not killed:
            if len(list(scored.glob("*.parquet"))) >= 2:
                # Our Ray's processes descend from this test process; the actor names itself by its class.
                for proc in psutil.Process().children(recursive=True):
                    try:
                        if "StageActor" in " ".join(proc.cmdline()):
                            proc.kill()
                            killed.append(proc.pid)
                            return
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
            time.sleep(0.05)

    killer = threading.Thread(target=kill_embedding_actor, daemon=True)
    killer.start()
    curate_here(world[0], output)
    killer.join(timeout=5)
    assert killed, "the embedding actor was never seen alive"
    assert kept_bytes(output) == reference
    check_complete(output, world[1])
