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
)
from curation.manifest import MANIFEST_FILE, inputs_digest, shards_table, write_shards
from curation.phases.dedup import keep_fraction_threshold, run_dedup
from curation.phases.export import export_formats, export_output  # noqa: F401 - export_output: curate export
from curation.phases.score import score
from curation.phases.write import write_phase
from curation.ray_address import check_ray_address
from curation.workdir import mark_dedup_done

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
    clean_log = lambda line: log(strip_credentials(line))  # noqa: E731
    return _storage_errors_as_one_line(
        output_url, lambda: _run_job(cfg, input_url, output_url, work_url, clean_log, rescore)
    )


def _storage_errors_as_one_line(output_url: str, run: Callable[[], JobResult]) -> JobResult:
    """`run()`, a storage error anywhere in it (a denied, read-only or full output) turned into one line."""
    try:
        return run()
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
    done = _completed_manifest(paths, cfg.digest(), shards)
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
    attempt = check_or_claim_work_dir(paths, cfg, input_url, shards, info.model_id, rescore=rescore)
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
    run = FinishedRun(cfg, shards, paths, info.model_id, plan, attempt, len(shards) - len(pending))
    if plan.embed is not None and plan.embed.domain is not None:
        run.domain = tally.summary()
    return _finish(run, "dedup", timings, started, log)


@dataclass
class FinishedRun:
    """What the phases after scoring need: a job whose shards are all scored."""

    cfg: Config
    shards: list[Shard]
    paths: JobPaths
    model_id: str
    plan: object
    attempt: int
    resumed_shards: int
    domain: dict | None = None


def _finish(run: FinishedRun, first_phase: str, timings: dict, started: float, log) -> JobResult:
    """The phases after scoring, from `first_phase` (dedup, or write: the decisions of the last dedup
    stay), then the exports, the manifest, the report and _SUCCESS."""
    cfg, shards, paths = run.cfg, run.shards, run.paths
    clip_threshold = keep_fraction_threshold(shards, paths, cfg)
    if first_phase == "dedup":
        t = time.time()
        n_dups = survive_node_loss(lambda: run_dedup(shards, paths, cfg, run.plan, clip_threshold), log)
        mark_dedup_done(paths, cfg, n_dups)
        log(f"dedup: {n_dups} duplicates found")
        timings["dedup_s"] = round(time.time() - t, 3)

    t = time.time()
    results = survive_node_loss(lambda: write_phase(shards, cfg, paths, clip_threshold), log)
    timings["write_s"] = round(time.time() - t, 3)
    # Nothing writes now: part files of another run and temporaries of failed writes go (listed as removed).
    removed = remove_stale_outputs(paths, shards)
    for location in (paths.out, paths.work):
        location.remove_temporaries()
    if removed:
        log(f"removed {len(removed)} files that were not this job's from kept/ and rejected/ (see the manifest)")

    t = time.time()
    exports = survive_node_loss(lambda: export_formats(cfg, paths.output_url, results, log), log)
    timings["export_s"] = round(time.time() - t, 3)
    timings["total_s"] = round(time.time() - started, 3)

    shards_file = write_shards(paths.out, shards_table(shards, results))
    manifest = job_manifest(cfg, run.model_id, shards, results, timings, run.attempt, run.resumed_shards, shards_file)
    manifest["reject_reasons"] = run.plan.reject_reasons()
    manifest["heads"] = [{"column": h.score_column, "reason": h.reject_reason} for h in cfg.heads]
    if run.domain is not None:
        manifest["domain"] = run.domain
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
    _write_report(paths.output_url, log)
    paths.out.write_bytes(b"", "_SUCCESS")
    return JobResult(output_url=paths.output_url, manifest=manifest)


# Settings the phases after scoring may change without scoring again (`curate dedup`, `curate write`).
REDO_SETTINGS = {
    "dedup": ("dedup.", "image_filter.", "clip.keep_fraction", "output.", "run."),
    "write": ("output.", "run."),
}


def redo_phases(
    output_url: str,
    overrides: tuple[str, ...] = (),
    first_phase: str = "dedup",
    input_url: str | None = None,
    log: Callable[[str], None] = print,
) -> JobResult:
    """`curate dedup OUTPUT` / `curate write OUTPUT`: the phases from `first_phase` on, again, from the
    committed scored shards of the run that wrote OUTPUT, with its config and these overrides; gives the
    bytes a full run with those settings gives. Overrides that would change scoring are refused."""
    from curation.config import load_config

    work_url = load_config(None, overrides).run.work_dir or f"{output_url.rstrip('/')}/_work"
    paths = JobPaths(output_url=output_url, work_url=work_url)
    clean_log = lambda line: log(strip_credentials(line))  # noqa: E731
    return _storage_errors_as_one_line(output_url, lambda: _redo(paths, overrides, first_phase, input_url, clean_log))


def _redo(paths: JobPaths, overrides, first_phase: str, input_url: str | None, log) -> JobResult:
    from curation.config import changed_settings, config_from
    from curation.models.info import model_info
    from curation.models.weights import check_model_files
    from curation.plan import StagePlan
    from curation.workdir import adopt_config, check_dedup_done, inputs_of, read_job, recorded_inputs, scored_with

    started = time.time()
    job = read_job(paths)
    cfg = config_from(job["config"], overrides)
    refused = [
        s for s in changed_settings(config_from(job["config"]), cfg) if not s.startswith(REDO_SETTINGS[first_phase])
    ]
    if refused:
        raise UserError(
            f"`curate {first_phase}` cannot change {', '.join(refused)}: that changes scoring; "
            "use `curate run` with a new --output"
        )
    shards = list_shards(input_url or job["input"], cfg.input.format)
    if inputs_of(shards) != recorded_inputs(job):
        raise UserError(
            f"the input {strip_credentials(input_url or job['input'])} is not the one scored into "
            f"{strip_credentials(paths.output_url)}: pass the scored input with --input"
        )
    unscored = _pending(shards, paths)
    if unscored:
        raise UserError(
            f"{len(unscored)} of {len(shards)} shards of {strip_credentials(paths.output_url)} are not scored: "
            "finish the run with `curate run` first"
        )
    info = model_info(cfg.model)
    if job.get("scored_with") != scored_with(info.model_id):
        raise UserError(
            f"{strip_credentials(paths.output_url)} was scored by another version or model: "
            "rerun it with `curate run --rescore`"
        )
    if first_phase == "write":
        check_dedup_done(paths, cfg)
    check_model_files(cfg)
    plan = StagePlan.build(cfg, info)
    init_ray(cfg)
    paths.out.remove("_SUCCESS")
    adopt_config(paths, cfg)
    earlier = read_json(paths.out, MANIFEST_FILE, keys={}) if paths.out.exists(MANIFEST_FILE) else None
    run = FinishedRun(cfg, shards, paths, info.model_id, plan, int(job.get("attempt", 1)), len(shards))
    run.domain = (earlier or {}).get("domain")
    return _finish(run, first_phase, {}, started, log)


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
