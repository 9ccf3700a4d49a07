"""Semantic dedup benchmark: time, peak memory and accuracy of SemDeDup on planted duplicates.

The data: `n` L2-normalised embeddings stored as float16 (like the records' `img_emb`), drawn from a
mixture of Gaussians on the sphere (one component per ~1,000 rows; rows of one component have cosine
~0.8 with each other, ~0 with other components). About 7.5 % of the rows are planted copies: an
original plus small noise (cosine ~0.9988 with it), in groups of one original and 1-3 copies. With the
pipeline's eps = 0.02 a pair is a duplicate at cosine >= 0.98, so every planted pair is one and no
distinct pair comes near.

Scored: a rejected row is a true positive when it was planted in a group and its `dup_of` is in the
same group; any other rejected row is a false positive. Recall is over the rows that should go (group
size - 1 per group). The last line printed is one JSON object for scripts.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import click
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup.semantic import semantic_dedup

EPS = 0.02  # the pipeline's default semantic eps
COPY_FRACTION = 0.075  # planted copies, of all rows
ROWS_PER_COMPONENT = 1_000  # mixture components of the synthetic data
SPREAD = 0.5  # noise norm around a component centre: in-component cosine ~ 1 / (1 + SPREAD^2)
COPY_NOISE = 0.05  # noise norm of a copy: cosine to its original ~ 1 / sqrt(1 + COPY_NOISE^2)
BLOCK = 65_536  # rows generated at once (float32 scratch)


@dataclass(frozen=True)
class PlantedEmbeddings:
    """Synthetic rows: `keys` (unrelated to row order), `emb` float16 (n, dim) unit rows, `quality`,
    and `group`: the planted duplicate group of a row (original and copies), -1 for the others."""

    keys: pa.Array
    emb: np.ndarray
    quality: np.ndarray
    group: np.ndarray

    @property
    def planted_copies(self) -> int:
        """Rows that should be rejected: group size - 1 for every group."""
        sizes = np.bincount(self.group[self.group >= 0])
        return int((sizes[sizes > 0] - 1).sum())


@dataclass(frozen=True)
class DedupSettings:
    """How the benchmark runs `semantic_dedup` for n rows."""

    k: int
    sample_size: int
    niter: int


def settings_for(n: int) -> DedupSettings:
    """~2,000 rows per cluster (SemDeDup-style), k-means on <= 64 points per centroid, 10 iterations."""
    k = max(1, n // 2_000)
    return DedupSettings(k=k, sample_size=min(n, 64 * k), niter=10)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_planted_embeddings(
    *, n: int, dim: int, seed: int, rows_per_component: int = ROWS_PER_COMPONENT
) -> PlantedEmbeddings:
    """Generate the benchmark's rows (see the module docstring); seeded, O(n) time, float16 storage. With
    `rows_per_component` >= n all rows are one Gaussian blob: no structure for an index to use."""
    rng = np.random.default_rng(seed)
    n_copies = int(round(n * COPY_FRACTION)) if n >= 20 else 0
    copies_per_group = rng.integers(1, 4, size=max(1, n_copies))  # 1-3 copies per original
    copies_per_group = copies_per_group[: np.searchsorted(np.cumsum(copies_per_group), n_copies, side="right")]
    n_copies = int(copies_per_group.sum())
    n_base = n - n_copies

    centres = _unit(rng.standard_normal((max(1, n // rows_per_component), dim), dtype=np.float32))
    emb = np.empty((n, dim), dtype=np.float16)
    for start in range(0, n_base, BLOCK):
        stop = min(n_base, start + BLOCK)
        component = rng.integers(0, len(centres), size=stop - start)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * (SPREAD / np.sqrt(dim))
        emb[start:stop] = _unit(centres[component] + noise)

    group = np.full(n, -1, dtype=np.int64)
    originals = rng.choice(n_base, size=len(copies_per_group), replace=False)
    group[originals] = np.arange(len(originals))
    source = np.repeat(originals, copies_per_group)  # the original each copy row copies
    group[n_base:] = np.repeat(np.arange(len(originals)), copies_per_group)
    for start in range(0, n_copies, BLOCK):
        stop = min(n_copies, start + BLOCK)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * (COPY_NOISE / np.sqrt(dim))
        emb[n_base + start : n_base + stop] = _unit(emb[source[start:stop]].astype(np.float32) + noise)

    ids = rng.permutation(n)  # keys in an order unrelated to rows, originals and copies
    keys = pc.binary_join_element_wise("row/", pa.array(np.char.zfill(ids.astype(str), 9)), "")
    quality = rng.random(n, dtype=np.float32)
    return PlantedEmbeddings(keys=keys, emb=emb, quality=quality, group=group)


def score(data: PlantedEmbeddings, decisions: pa.Table) -> dict:
    """Precision and recall of the rejected rows against the planted groups."""
    rejected = pc.index_in(decisions.column("key"), value_set=data.keys).to_numpy(zero_copy_only=False)
    targets = pc.index_in(decisions.column("dup_of"), value_set=data.keys).to_numpy(zero_copy_only=False)
    group = data.group
    true = (group[rejected] >= 0) & (group[rejected] == group[targets])
    tp = int(true.sum())
    planted = data.planted_copies
    sizes = np.bincount(group[group >= 0])
    rejected_groups = group[rejected]
    rejected_per_group = np.bincount(rejected_groups[rejected_groups >= 0], minlength=len(sizes))
    return {
        "rejected": len(rejected),
        "true_positives": tp,
        "precision": tp / len(rejected) if len(rejected) else 1.0,
        "recall": tp / planted if planted else 1.0,
        "groups_with_one_survivor": float(np.mean(sizes - rejected_per_group == 1)) if len(sizes) else 1.0,
    }


class PeakRss:
    """Peak resident memory (GiB) of this process while the block runs, sampled every 20 ms."""

    def __init__(self, interval: float = 0.02) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak_bytes = 0

    def _sample(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> PeakRss:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    @property
    def gib(self) -> float:
        return self.peak_bytes / 2**30


def _run_once(n: int, dim: int, seed: int) -> dict:
    with PeakRss() as rss:
        data = make_planted_embeddings(n=n, dim=dim, seed=seed)
        settings = settings_for(n)
        steps: dict[str, float] = {}
        start, cpu_start = time.perf_counter(), time.process_time()
        decisions = semantic_dedup(
            data.keys,
            data.emb,
            data.quality,
            k=settings.k,
            eps=EPS,
            seed=seed,
            sample_size=settings.sample_size,
            niter=settings.niter,
            timings=steps,
        )
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        run = {
            "n": n,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "k": settings.k,
            "steps": {name: round(value, 3) for name, value in steps.items()},
            "planted": data.planted_copies,
            **score(data, decisions),
        }
        del data, decisions
    run["peak_rss_gib"] = rss.gib
    return run


def describe(run: dict) -> str:
    """One readable line about one run."""
    return (
        f"n={run['n']:,}: {run['seconds']:.1f} s ({run['cpu_seconds']:.1f} s CPU), "
        f"peak RSS {run['peak_rss_gib']:.2f} GiB, k={run['k']}, "
        f"rejected {run['rejected']:,} of {run['planted']:,} planted copies, precision {run['precision']:.4f}, "
        f"recall {run['recall']:.4f}, groups with exactly one survivor {run['groups_with_one_survivor']:.4f}; "
        + ", ".join(f"{name} {value:.1f}" for name, value in run["steps"].items())
    )


def run_dedup_bench(n: int, dim: int, scaling: bool, seed: int = 0, *, log=None) -> dict:
    """Run the benchmark on n rows (with `scaling`, on n // 10 rows first) and return the figures of the
    JSON line. `log` (e.g. `click.echo`) receives one readable line per run."""
    runs = []
    for size in ([max(2, n // 10)] if scaling else []) + [n]:
        runs.append(_run_once(size, dim, seed))
        if log is not None:
            log(describe(runs[-1]))
    big = runs[-1]
    return {
        "bench": "dedup",
        "n": n,
        "dim": dim,
        "seconds": round(big["seconds"], 3),
        "peak_rss_gib": round(big["peak_rss_gib"], 3),
        "precision": round(big["precision"], 6),
        "recall": round(big["recall"], 6),
        "scaling_ratio": round(big["seconds"] / runs[0]["seconds"], 3) if scaling else None,
        "k": big["k"],
        "steps": big["steps"],
        "steps_small": runs[0]["steps"] if scaling else None,
    }


@click.command("dedup")
@click.option("--n", "n", default=100_000, show_default=True, type=click.IntRange(min=2), help="Rows.")
@click.option("--dim", default=512, show_default=True, type=click.IntRange(min=2), help="Embedding width.")
@click.option("--scaling", is_flag=True, help="Also run n/10 rows first and report time(n) / time(n/10).")
@click.option("--seed", default=0, show_default=True, type=int)
def dedup_command(n: int, dim: int, scaling: bool, seed: int) -> None:
    """Time SemDeDup (k-means + in-cluster cosine) on synthetic embeddings with planted duplicates."""
    figures = run_dedup_bench(n, dim, scaling, seed, log=click.echo)
    click.echo(json.dumps(figures))
