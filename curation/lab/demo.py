"""`curate demo`: generate a small synthetic world, curate it with pipelines/demo.yaml, print the funnel."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

from curation.config import load_config

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "pipelines" / "demo.yaml"


def run_demo(root: Path, *, rows: int = 3000, seed: int = 0, log: Callable[[str], None] = print) -> dict:
    from curation.lab.synth import generate
    from curation.runner import run_job

    started = time.time()
    root = root.resolve()
    input_dir, output_dir = root / "input", root / "curated"
    truth_path = input_dir / "truth.json"
    if not _same_world(truth_path, rows, seed):
        log(f"generating {rows} synthetic image-text pairs in {input_dir} ...")
        generate(str(input_dir), rows=rows, seed=seed, fmt="webdataset")
        shutil.rmtree(output_dir, ignore_errors=True)  # curated from another world: not this one's output
    cfg = load_config(DEMO_CONFIG if DEMO_CONFIG.exists() else None)
    _forget_other_runs(output_dir, cfg.digest())
    log(f"curating with {DEMO_CONFIG.name if DEMO_CONFIG.exists() else 'built-in defaults'} ...")
    result = run_job(cfg, str(input_dir), str(output_dir), log=log)
    f = result.manifest["funnel"]
    log("")
    log(f"funnel: input {f['input']}  kept {f['kept']}  rejected {f['rejected']}")
    for reason, count in f["rejected_by_reason"].items():
        log(f"  rejected {reason:<26} {count}")
    log(f"output: {output_dir}/kept/*.parquet  (rejected/, _manifest.json beside it); open {output_dir}/report.html")
    log(f"done in {time.time() - started:.0f} s")
    return result.manifest


def _same_world(truth_path: Path, rows: int, seed: int) -> bool:
    """Whether the demo's input is the world this version of the generator would write (a world left by
    an older version, with other defect kinds, is generated again)."""
    from curation.lab.synth.defects import DEFECT_KINDS

    if not truth_path.exists():
        return False
    truth = json.loads(truth_path.read_text())
    return (truth.get("rows"), truth.get("seed"), truth.get("defect_kinds")) == (rows, seed, list(DEFECT_KINDS))


def _forget_other_runs(output_dir: Path, digest: str) -> None:
    """The demo's output is disposable: one left by another config is removed, not refused."""
    for marker in (output_dir / "_manifest.json", output_dir / "_work" / "job.json"):
        if marker.exists() and json.loads(marker.read_text()).get("config_digest") != digest:
            shutil.rmtree(output_dir)
            return
