"""Memory benchmark: peak memory of a whole job at N and at 10·N input rows.

Each size runs as `curate run` would, in a fresh process that starts its own local Ray; this process
samples the memory of that process tree (driver, Ray's daemons, every worker) every 0.25 s and keeps
the peak (summed PSS: shared pages such as the object store are counted once; see TreeMemory). The
job streams shard by shard, so the peak should depend on block and batch sizes, not on the number of
rows: headline ratio = peak(10·N) / peak(N), 1.0 when memory does not grow at all. N should already
span more shards than the cluster works on at once (the defaults: 8 shards on 2 cores), else the
small run never reaches the steady state of the large one (fewer worker processes, fewer blocks in
flight) and the ratio measures that instead.
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

from curation.lab.bench.common import TreeMemory, WebJpegs, json_line, web_jpegs, write_parquet_shards

JOB = (
    "import json, sys\n"
    "from curation.config import load_config\n"
    "from curation.runner import run_job\n"
    "cfg = load_config(None, json.loads(sys.argv[3]))\n"
    "result = run_job(cfg, sys.argv[1], sys.argv[2], log=lambda line: None)\n"
    "print(json.dumps(result.manifest['funnel']['input']))\n"
)


def measure_job(input_dir: Path, output_dir: Path, overrides: tuple[str, ...]) -> dict:
    """Run one job in a child process; its peak tree memory (GiB), wall seconds and input rows."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", JOB, str(input_dir), str(output_dir), json.dumps(list(overrides))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with TreeMemory(child.pid) as memory:
        out, err = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"benchmark job failed ({child.returncode}): {err.strip().splitlines()[-1:]}")
    return {"peak_gib": memory.gib, "seconds": time.perf_counter() - start, "rows": int(out.strip().splitlines()[-1])}


def run_memory_bench(
    n: int, shard_size: int, overrides: tuple[str, ...] = (), factor: int = 10, seed: int = 0, log=None
) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    runs = {}
    try:
        images, kind = web_jpegs(n * factor, seed)
        for rows in (n, n * factor):
            input_dir = work / f"input-{rows}"
            write_parquet_shards(input_dir, WebJpegs(images.pool, rows), shard_size)
            runs[rows] = measure_job(input_dir, work / f"output-{rows}", overrides)
            if log is not None:
                r = runs[rows]
                log(
                    f"{rows:>8} rows in {-(-rows // shard_size)} shards: peak {r['peak_gib']:.2f} GiB (driver + Ray), {r['seconds']:.1f} s"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    small, big = runs[n], runs[n * factor]
    ratio = big["peak_gib"] / small["peak_gib"]
    if log is not None:
        log(f"images: {kind}; ratio peak({factor}N) / peak(N) = {ratio:.3f}")
    return {
        "bench": "memory",
        "n": n,
        "factor": factor,
        "shard_size": shard_size,
        "peak_gib_n": small["peak_gib"],
        "peak_gib_10n": big["peak_gib"],
        "seconds_n": small["seconds"],
        "seconds_10n": big["seconds"],
        "ratio": ratio,
    }


@click.command("memory")
@click.option("--n", default=400, show_default=True, type=click.IntRange(min=1), help="Rows of the small run.")
@click.option("--shard-size", default=50, show_default=True, type=click.IntRange(min=1), help="Rows per input shard.")
@click.option(
    "--factor", default=10, show_default=True, type=click.IntRange(min=2), help="The large run has factor x n rows."
)
@click.option(
    "--set", "overrides", multiple=True, metavar="a.b=VALUE", help="Config override for the job (repeatable)."
)
def memory_command(n: int, shard_size: int, factor: int, overrides: tuple[str, ...]) -> None:
    """Peak memory (driver + Ray workers) of a job at n and factor x n input rows."""
    click.echo(json_line(run_memory_bench(n, shard_size, overrides, factor, log=click.echo)))
