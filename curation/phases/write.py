"""Phase 3: the scored shards, with the dedup decisions, become kept/ and rejected/ (scheduled through
curation/execution.py: no Ray import here)."""

from __future__ import annotations

import json

import pyarrow as pa

from curation.config import Config
from curation.errors import UserError
from curation.execution import over_items
from curation.io.sources import Shard
from curation.io.storage import storage_problem_in
from curation.job import JobPaths, write_final_shard


def write_phase(shards: list[Shard], cfg: Config, paths: JobPaths, clip_threshold: float | None) -> list[dict]:
    """Phase 3: each scored shard, with the job-wide clip threshold and its own shard's dedup decisions
    applied, becomes its kept/ and rejected/ files (job.write_final_shard), by tasks of a few shards each.
    Returns each shard's result (rows, counts by reason, the files' sha256), sorted by shard."""

    def write(batch: pa.Table) -> pa.Table:
        results = []
        for row in batch.to_pylist():
            try:
                results.append(write_final_shard(Shard(**row), cfg, paths, clip_threshold))
            except UserError as exc:  # e.g. an input changed since scoring: the driver says it in one line
                results.append({"user_error": str(exc)})
            except Exception as exc:  # a full or read-only disk, say: one line too
                problem = storage_problem_in(exc, paths.output_url)
                if problem is None:
                    raise
                results.append({"user_error": str(problem)})
        return pa.table({"result": [json.dumps(r) for r in results]})

    items = [{"shard_id": s.shard_id, "url": s.url, "format": s.format} for s in shards]
    ds = over_items(items, write, num_cpus=1)
    results = [json.loads(row["result"]) for row in ds.iter_rows()]
    failed = sorted(r["user_error"] for r in results if "user_error" in r)
    if failed:
        raise UserError(failed[0])
    return sorted(results, key=lambda r: r["shard_id"])
