"""The job: its phases in order (curation/phases/: score, dedup, write, exports), then the manifest and
_SUCCESS; Ray plumbing shared by the phases is in curation/execution.py.

Phase 1 (score) streams input shards through read+decode+basic tasks, an embedding actor pool and
a commit task, one Ray block per input shard, skipping shards already committed. Phase 2 (dedup)
reads only the small columns of the scored shards and groups them by hash. Phase 3 (write) turns
each scored shard plus the decisions into kept/ and rejected/ files; then the exports output.formats
and output.embeddings ask for (curation/io/sinks: one task per output shard); then the manifest; then _SUCCESS.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import pyarrow as pa

from curation.config import Config
from curation.errors import UserError
from curation.execution import cluster_address, init_ray, survive_node_loss, warm_task_workers
from curation.io.sources import Shard, list_shards
from curation.io.storage import check_output_location, storage_problem_in
from curation.io.urls import strip_credentials
from curation.job import (
    JobPaths,
    job_manifest,
    read_json,
    remove_stale_outputs,
    write_final_shard,
)
from curation.manifest import MANIFEST_FILE, inputs_digest, shards_table, write_shards
from curation.phases.dedup import keep_fraction_threshold, run_dedup, task_blocks
from curation.phases.export import export_formats, export_output  # noqa: F401 - export_output: curate export
from curation.phases.score import score
from curation.ray_address import check_ray_address

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
if TYPE_CHECKING:
    pass

import ray  # noqa: E402


@dataclass
class JobResult:
    output_url: str
    manifest: dict
    already_complete: bool = False


def run_job(
    cfg: Config, input_url: str, output_url: str, log: Callable[[str], None] = print, *, rescore: bool = False
) -> JobResult:
    """Run the job; an operator's mistake (a storage error included, wherever it happens) is one UserError.
    URLs in what it logs and stores carry no credentials (io/urls.py)."""
    work_url = cfg.run.work_dir or f"{output_url.rstrip('/')}/_work"
    check_output_location(input_url, output_url, work_url)  # before anything is read or written
    try:
        return _run_job(cfg, input_url, output_url, work_url, lambda line: log(strip_credentials(line)), rescore)
    except UserError:
        raise
    except Exception as exc:
        problem = storage_problem_in(exc, output_url)
        if problem is not None:
            raise problem from None
        raise


def _run_job(
    cfg: Config, input_url: str, output_url: str, work_url: str, log: Callable[[str], None], rescore: bool
) -> JobResult:
    started = time.time()
    paths = JobPaths(output_url=output_url, work_url=work_url)
    try:
        shards = list_shards(input_url, cfg.input.format)
    except Exception as exc:  # e.g. botocore's NoCredentialsError: named with the input's URL
        problem = storage_problem_in(exc, input_url)
        if problem is not None:
            raise problem from None
        raise
    digest = cfg.digest()
    done = _completed_manifest(paths, digest, shards)
    if done is not None:
        log(f"{output_url} already holds this job's complete output; nothing to do")
        return JobResult(output_url=output_url, manifest=done, already_complete=True)
    # Imported here: workers that unpickle this module's functions need not import torch.
    from curation.domain import DomainTally
    from curation.models.info import model_info
    from curation.models.weights import check_model_files
    from curation.plan import StagePlan
    from curation.workdir import check_or_claim_work_dir

    info = model_info(cfg.model)
    # Mistakes found before anything is written: a wrong weights file (one line now, not an actor's
    # traceback later), a cluster that does not answer (not a wait of many minutes in ray.init).
    check_model_files(cfg)
    if not ray.is_initialized() and cluster_address(cfg):
        check_ray_address(cluster_address(cfg))
    paths.out.remove("_SUCCESS")  # a denied, read-only or full disk: one line (run_job)
    attempt = check_or_claim_work_dir(paths, digest, shards, info.model_id, rescore=rescore)
    plan = StagePlan.build(cfg, info)
    init_ray(cfg)
    timings: dict = {}

    t = time.time()
    pending = _pending(shards, paths)
    if len(pending) < len(shards):
        log(f"resuming: {len(shards) - len(pending)} of {len(shards)} shards already scored")
    warm_task_workers()
    tally = DomainTally(log)  # rows outside the built-in model's domain: said once, early
    stage_seconds = survive_node_loss(lambda: score(_pending(shards, paths), plan, paths, cfg, log, tally), log)
    timings["score_s"] = round(time.time() - t, 3)
    timings["stages"] = stage_seconds

    clip_threshold = keep_fraction_threshold(shards, paths, cfg)

    t = time.time()
    n_dups = survive_node_loss(lambda: run_dedup(shards, paths, cfg, plan, clip_threshold), log)
    log(f"dedup: {n_dups} duplicates found")
    timings["dedup_s"] = round(time.time() - t, 3)

    t = time.time()
    results = survive_node_loss(lambda: _write(shards, cfg, paths, clip_threshold), log)
    timings["write_s"] = round(time.time() - t, 3)
    # Nothing writes now: part files of another run and temporaries of failed writes go (listed as removed).
    removed = remove_stale_outputs(paths, shards)
    for location in (paths.out, paths.work):
        location.remove_temporaries()
    if removed:
        log(f"removed {len(removed)} files that were not this job's from kept/ and rejected/ (see the manifest)")

    t = time.time()
    exports = survive_node_loss(lambda: export_formats(cfg, output_url, results, log), log)
    timings["export_s"] = round(time.time() - t, 3)
    timings["total_s"] = round(time.time() - started, 3)

    shards_file = write_shards(paths.out, shards_table(shards, results))
    manifest = job_manifest(
        cfg, info.model_id, shards, results, timings, attempt, len(shards) - len(pending), shards_file
    )
    manifest["reject_reasons"] = plan.reject_reasons()
    manifest["heads"] = [{"column": h.score_column, "reason": h.reject_reason} for h in cfg.heads]
    if plan.embed is not None and plan.embed.domain is not None:
        manifest["domain"] = tally.summary()
    manifest["clip_threshold"] = {
        "min_score": cfg.clip.min_score,
        "keep_fraction": cfg.clip.keep_fraction,
        "keep_fraction_threshold": clip_threshold
        if clip_threshold is not None and math.isfinite(clip_threshold)
        else None,
    }
    manifest["removed"] = removed
    manifest["exports"] = exports
    paths.out.write_bytes(json.dumps(manifest, indent=2, sort_keys=True).encode(), MANIFEST_FILE)
    _write_report(output_url, log)
    paths.out.write_bytes(b"", "_SUCCESS")
    return JobResult(output_url=output_url, manifest=manifest)


def _write_report(output_url: str, log) -> None:
    """report.html beside the output; a report that fails is logged, never the end of the run."""
    try:
        from curation.report import write_report

        log(f"report: {write_report(output_url)}")
    except Exception as exc:  # noqa: BLE001 - the output is complete without it
        log(f"report: not written ({type(exc).__name__}: {exc}); run `curate report {output_url}` to retry")


def _pending(shards: list[Shard], paths: JobPaths) -> list[Shard]:
    scored = paths.scored_ids()
    return [s for s in shards if s.shard_id not in scored]


def _write(shards: list[Shard], cfg: Config, paths: JobPaths, clip_threshold: float | None) -> list[dict]:
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
    ds = ray.data.from_items(items, override_num_blocks=task_blocks(len(items)))
    ds = ds.map_batches(write, batch_size=None, batch_format="pyarrow", num_cpus=1)
    results = [json.loads(row["result"]) for row in ds.iter_rows()]
    failed = sorted(r["user_error"] for r in results if "user_error" in r)
    if failed:
        raise UserError(failed[0])
    return sorted(results, key=lambda r: r["shard_id"])


def _completed_manifest(paths: JobPaths, digest: str, shards: list[Shard]) -> dict | None:
    if not paths.out.exists("_SUCCESS"):
        return None
    output = strip_credentials(paths.output_url)
    manifest = (
        read_json(paths.out, MANIFEST_FILE, keys={"config_digest": str, "inputs": dict, "funnel": dict})
        if paths.out.exists(MANIFEST_FILE)
        else None
    )
    if manifest is None or not isinstance(manifest["inputs"].get("digest"), str):
        raise UserError(
            f"{output} holds _SUCCESS but no readable {MANIFEST_FILE} of this version (another tool's output, an "
            "earlier version's, or a damaged one): choose a new --output, or delete that directory to start over"
        )
    if manifest["config_digest"] == digest and manifest["inputs"]["digest"] == inputs_digest(s.url for s in shards):
        return manifest
    raise UserError(f"{output} already holds a completed run of another config or inputs: choose a new --output")
