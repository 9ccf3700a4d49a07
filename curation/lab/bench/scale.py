"""Scale benchmark: the dedup and write phases alone, on fake scored shards of N (and 10·N) rows.

This process builds scored shards with the real record schema (`--dim`-wide embeddings, sha256, pHash,
clip_score) in which 20 % of the rows are planted copies of distinct originals: 10 % exact (same bytes),
5 % near (pHash 3 bits away, cosine ~0.99), 5 % semantic (cosine ~0.995, pHash unrelated); the
originals gather around topics, as real embeddings do. Originals
score higher, so the copies are the rows a correct dedup rejects. Each size then runs in a fresh child
process, the driver, which starts a local Ray and runs the job's own phases on the shards:
keep_fraction's threshold (when set), dedup, write. The child reports its own peak RSS (VmHWM: the
driver alone, not Ray's workers) and each phase's seconds; this process then scores the decisions
against the planted copies (precision, recall). With --scaling the headline `ratio` is the driver's
peak at 10·N ÷ at N: 1.0 when nothing on the driver grows with the rows.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads

from curation.lab.bench.common import json_line

COPIES = {"exact": 0.10, "near": 0.05, "semantic": 0.05}

DRIVER = """
import json, sys, time
from curation.config import load_config
from curation.execution import init_ray
from curation.io.sources import Shard
from curation.job import JobPaths
from curation.models.info import model_info
from curation.phases.dedup import keep_fraction_threshold, run_dedup
from curation.phases.write import write_phase
from curation.plan import StagePlan

root, shards, overrides = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
cfg = load_config(None, overrides)
paths = JobPaths(output_url=root + "/out", work_url=root + "/out/_work")
shards = [Shard(**s) for s in shards]
init_ray(cfg)
plan = StagePlan.build(cfg, model_info(cfg.model))
seconds = {}
t = time.perf_counter()
threshold = keep_fraction_threshold(shards, paths, cfg)
seconds["keep_fraction_s"] = time.perf_counter() - t
t = time.perf_counter()
decisions = run_dedup(shards, paths, cfg, plan, threshold)
seconds["dedup_s"] = time.perf_counter() - t
t = time.perf_counter()
results = write_phase(shards, cfg, paths, threshold)
seconds["write_s"] = time.perf_counter() - t
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
kept = sum(r["kept"] for r in results)
print(json.dumps({"driver_peak_mb": peak / 1024, "decisions": decisions, "kept": kept, **seconds}))
"""


def fake_scored_shards(root: Path, rows: int, shards: int, dim: int, seed: int) -> tuple[list[dict], dict[str, str]]:
    """Write `shards` scored shards of `rows` rows in all under root/out/_work; returns the shards (as
    dicts) and the planted copies (key -> kind)."""
    from curation.job import JobPaths, commit_scored
    from curation.schema import record_schema

    rng = np.random.default_rng(seed)
    n_copies = {kind: int(rows * share) for kind, share in COPIES.items()}
    n_orig = rows - sum(n_copies.values())
    emb = _topic_embeddings(rng, n_orig, dim)
    phash = rng.integers(0, 2**63, n_orig, dtype=np.int64).astype(np.uint64)
    sha = rng.integers(0, 2**63, (n_orig, 2), dtype=np.int64)
    of = rng.choice(n_orig, sum(n_copies.values()), replace=False)  # each copy's own original
    parts, start = {"emb": [emb], "phash": [phash], "sha": [sha], "score": [np.full(n_orig, 0.3, np.float32)]}, 0
    for kind, count in n_copies.items():
        src = of[start : start + count]
        start += count
        e, p, s = emb[src].copy(), phash[src].copy(), sha[src].copy()
        if kind != "exact":
            noise = rng.standard_normal((count, dim), dtype=np.float32)
            noise *= (0.15 if kind == "near" else 0.1) / np.linalg.norm(noise, axis=1, keepdims=True)
            e = (e + noise) / np.linalg.norm(e + noise, axis=1, keepdims=True)
            s = rng.integers(0, 2**63, (count, 2), dtype=np.int64)
            if kind == "near":
                bits = rng.integers(0, 64, (count, 3))
                for b in range(3):
                    p ^= np.uint64(1) << bits[:, b].astype(np.uint64)
            else:
                p = rng.integers(0, 2**63, count, dtype=np.int64).astype(np.uint64)
        parts["emb"].append(e)
        parts["phash"].append(p)
        parts["sha"].append(s)
        parts["score"].append(np.full(count, 0.2, np.float32))
    emb = np.concatenate(parts["emb"]).astype(np.float16)
    phash, sha, score = (np.concatenate(parts[k]) for k in ("phash", "sha", "score"))
    position = rng.permutation(rows)  # rows spread over the shards at random
    kinds = np.repeat(list(n_copies), list(n_copies.values()))
    copies = {f"{pos // -(-rows // shards):05d}/{pos:010d}": str(k) for pos, k in zip(position[n_orig:], kinds)}
    paths = JobPaths(output_url=str(root / "out"), work_url=str(root / "out" / "_work"))
    schema = record_schema(dim)
    per_shard = -(-rows // shards)
    order = np.argsort(position)
    found = []
    for shard in range(shards):
        idx = order[shard * per_shard : (shard + 1) * per_shard]
        if not len(idx):
            continue
        shard_id = f"{shard:05d}"
        n = len(idx)
        table = pa.table(
            {
                "key": [f"{shard_id}/{pos:010d}" for pos in position[idx]],
                "source": [shard_id] * n,
                "url": [f"https://example.com/{pos}.jpg" for pos in position[idx]],
                "caption": ["a fake caption"] * n,
                "image": [b"\xff\xd8fake"] * n,
                "sha256": [f"{a & (2**63 - 1):016x}{b & (2**63 - 1):016x}" * 2 for a, b in sha[idx]],
                "phash": pa.array(phash[idx], pa.uint64()),
                "img_emb": pa.FixedSizeListArray.from_arrays(pa.array(emb[idx].reshape(-1)), dim),
                "clip_score": pa.array(score[idx], pa.float32()),
                "status": ["kept"] * n,
            }
        )
        commit_scored(shard_id, table, paths, schema)
        found.append({"shard_id": shard_id, "url": str(root / "input" / f"{shard_id}.parquet"), "format": "parquet"})
    return found, copies


ROWS_PER_TOPIC = 5000


def _topic_embeddings(rng, n: int, dim: int) -> np.ndarray:
    """Unit embeddings drawn around random topic directions (cosine ~0.85 to their topic, ~0.7 to each
    other), as real image embeddings gather by subject: the structure k-means clusters rely on."""
    topics = rng.standard_normal((max(1, n // ROWS_PER_TOPIC), dim), dtype=np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    noise = rng.standard_normal((n, dim), dtype=np.float32)
    noise *= 0.6 / np.linalg.norm(noise, axis=1, keepdims=True)
    emb = topics[rng.integers(0, len(topics), n)] + noise
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def measure(rows: int, shards: int, dim: int, overrides: tuple[str, ...], seed: int, log) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        start = time.perf_counter()
        found, copies = fake_scored_shards(root, rows, shards, dim, seed)
        built = time.perf_counter() - start
        child = subprocess.run(
            [sys.executable, "-c", DRIVER, str(root), json.dumps(found), json.dumps(["model.threads=1", *overrides])],
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            raise RuntimeError(f"benchmark driver failed: {child.stderr.strip().splitlines()[-3:]}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        decided = root / "out" / "_work" / "decisions"
        table = pads.dataset(str(decided), format="parquet").to_table(columns=["key"]) if decided.exists() else None
        flagged = set(table.column("key").to_pylist()) if table is not None else set()
        hits = len(flagged & copies.keys())
        missed = {kind: sum(1 for k, v in copies.items() if v == kind and k not in flagged) for kind in COPIES}
        result.update(
            rows=rows,
            shards=len(found),
            build_s=built,
            precision=hits / len(flagged) if flagged else 1.0,
            recall=hits / len(copies) if copies else 1.0,
            missed=missed,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    log(
        f"{rows:>10} rows, {len(found)} shards: driver peak {result['driver_peak_mb']:.0f} MB; "
        f"dedup {result['dedup_s']:.1f} s, write {result['write_s']:.1f} s, keep_fraction {result['keep_fraction_s']:.1f} s; "
        f"planted P {result['precision']:.4f} R {result['recall']:.4f} (missed {result['missed']})"
    )
    return result


def run_scale_bench(rows: int, shards: int, dim: int, scaling: bool, overrides=(), seed: int = 0, log=print) -> dict:
    small = measure(rows, shards, dim, overrides, seed, log)
    out = {"bench": "scale", "dim": dim, "n": small}
    if scaling:
        big = measure(rows * 10, shards, dim, overrides, seed, log)
        work = lambda r: r["dedup_s"] + r["write_s"]  # noqa: E731
        out.update(
            n10=big,
            ratio=big["driver_peak_mb"] / small["driver_peak_mb"],
            seconds_ratio=work(big) / work(small),
        )
        log(f"driver peak ratio (10N / N) {out['ratio']:.3f}; dedup+write seconds ratio {out['seconds_ratio']:.2f}")
    return out


@click.command("scale")
@click.option("--rows", default=300_000, show_default=True, type=click.IntRange(min=100))
@click.option("--shards", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--dim", default=128, show_default=True, type=click.IntRange(min=2), help="Embedding width.")
@click.option("--scaling", is_flag=True, help="Also run 10 x rows; ratio = driver peak at 10N / at N.")
@click.option("--set", "overrides", multiple=True, metavar="a.b=VALUE", help="Config override (repeatable).")
@click.option("--seed", default=0, show_default=True, type=int)
def scale_command(rows: int, shards: int, dim: int, scaling: bool, overrides: tuple[str, ...], seed: int) -> None:
    """Driver memory and seconds of the dedup and write phases on fake scored shards with planted copies."""
    click.echo(json_line(run_scale_bench(rows, shards, dim, scaling, overrides, seed, log=click.echo)))
