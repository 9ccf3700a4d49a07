"""The one Ray runner: schedules the job's phases on Ray Data. The only module that imports ray.

Phase 1 (score) streams input shards through read+decode+basic tasks, an embedding actor pool and
a commit task, one Ray block per input shard, skipping shards already committed. Phase 2 (dedup)
reads only the small columns of the scored shards and groups them by hash. Phase 3 (write) turns
each scored shard plus the decisions into kept/ and rejected/ files; then the exports output.formats
and output.embeddings ask for (curation/io/sinks: one task per output shard); then the manifest; then _SUCCESS.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, replace
from importlib import metadata
from typing import TYPE_CHECKING, Callable

import pyarrow as pa

from curation import __version__
from curation.allocator import allocator_env, tune_this_process
from curation.config import Config
from curation.errors import UserError
from curation.io.sources import Shard, list_shards
from curation.io.storage import check_output_location, storage_problem_in
from curation.io.urls import strip_credentials, strip_credentials_in
from curation.job import (
    JobPaths,
    finish_scoring,
    funnel,
    read_and_prepare,
    read_json,
    remove_stale_outputs,
    run_stages,
    write_final_shard,
)
from curation.phases.dedup import keep_fraction_threshold, run_dedup, task_blocks
from curation.phases.export import export_formats, export_output  # noqa: F401 - export_output: curate export
from curation.ray_address import check_ray_address
from curation.schema import SCHEMA_VERSION

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
if TYPE_CHECKING:
    from curation.plan import StagePlan

import ray  # noqa: E402
from ray.data import ActorPoolStrategy, DataContext  # noqa: E402
from ray.data.context import ShuffleStrategy  # noqa: E402

LARGE_BLOCK = 4 << 30  # one input shard is one block: never split it
DECODE_TASK_MEMORY = 512 << 20  # a reading+decoding task: one shard's bytes and its model-sized pixels


@dataclass
class JobResult:
    output_url: str
    manifest: dict
    already_complete: bool = False


class _StageActor:
    """Holds the actor's stages (the embedding stage, after any CPU stages placed in the actor) and,
    with `post`, the post-embedding stages and the commit of each shard (a call then returns its
    shard's summary row, see _score). Their models load once, in the constructor. With `read`, a call
    gets the shard to read (see _score), not its rows."""

    def __init__(self, stages, post=None, paths: JobPaths | None = None, embed_dim: int = 0, read=None):
        self.stages, self.post, self.read = stages, post, read
        self.paths, self.embed_dim = paths, embed_dim
        for stage in [*stages, *(post or [])]:
            stage.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.post is None:
            batch = self.read(batch) if self.read is not None else batch
            return run_stages(self.stages, batch) if batch.num_rows else batch
        try:
            if self.read is not None:
                batch = self.read(batch)
            if not batch.num_rows:  # an empty shard, committed where it was read
                return _SUMMARY.empty_table()
            table = run_stages(self.stages, batch)
            return _scored(finish_scoring(table, self.post, self.paths, self.embed_dim))
        except Exception as exc:
            return _storage_failure(exc, self.paths)


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
    from curation.models.info import model_info
    from curation.models.weights import check_model_files
    from curation.plan import StagePlan
    from curation.workdir import check_or_claim_work_dir

    info = model_info(cfg.model)
    # Mistakes found before anything is written: a wrong weights file (one line now, not an actor's
    # traceback later), a cluster that does not answer (not a wait of many minutes in ray.init).
    check_model_files(cfg)
    if not ray.is_initialized() and _cluster_address(cfg):
        check_ray_address(_cluster_address(cfg))
    paths.out.remove("_SUCCESS")  # a denied, read-only or full disk: one line (run_job)
    attempt = check_or_claim_work_dir(paths, digest, shards, info.model_id, rescore=rescore)
    plan = StagePlan.build(cfg, info)
    _init_ray(cfg)
    timings: dict = {}

    t = time.time()
    pending = _pending(shards, paths)
    if len(pending) < len(shards):
        log(f"resuming: {len(shards) - len(pending)} of {len(shards)} shards already scored")
    _warm_task_workers()
    stage_seconds = _survive_node_loss(
        lambda: _score(_pending(shards, paths), plan, paths, info.embed_dim, cfg, log), log
    )
    timings["score_s"] = round(time.time() - t, 3)
    timings["stages"] = stage_seconds

    clip_threshold = keep_fraction_threshold(shards, paths, cfg)

    t = time.time()
    n_dups = _survive_node_loss(lambda: run_dedup(shards, paths, cfg, plan, clip_threshold), log)
    log(f"dedup: {n_dups} duplicates found")
    timings["dedup_s"] = round(time.time() - t, 3)

    t = time.time()
    results = _survive_node_loss(lambda: _write(shards, cfg, paths, clip_threshold), log)
    timings["write_s"] = round(time.time() - t, 3)
    # Nothing writes now: part files of another run and temporaries of failed writes go (listed as removed).
    removed = remove_stale_outputs(paths, shards)
    for location in (paths.out, paths.work):
        location.remove_temporaries()
    if removed:
        log(f"removed {len(removed)} files that were not this job's from kept/ and rejected/ (see the manifest)")

    t = time.time()
    exports = _survive_node_loss(lambda: export_formats(cfg, output_url, results, log), log)
    timings["export_s"] = round(time.time() - t, 3)
    timings["total_s"] = round(time.time() - started, 3)

    manifest = _manifest(cfg, info.model_id, shards, results, timings, attempt, len(shards) - len(pending))
    manifest["reject_reasons"] = plan.reject_reasons()
    manifest["clip_threshold"] = {
        "min_score": cfg.clip.min_score,
        "keep_fraction": cfg.clip.keep_fraction,
        "keep_fraction_threshold": clip_threshold
        if clip_threshold is not None and math.isfinite(clip_threshold)
        else None,
    }
    manifest["removed"] = removed
    manifest["exports"] = exports
    paths.out.write_bytes(json.dumps(manifest, indent=2, sort_keys=True).encode(), "_manifest.json")
    _write_report(output_url, log)
    paths.out.write_bytes(b"", "_SUCCESS")
    return JobResult(output_url=output_url, manifest=manifest)


NODE_LOSS_RETRIES = 2


def _write_report(output_url: str, log) -> None:
    """report.html beside the output; a report that fails is logged, never the end of the run."""
    try:
        from curation.report import write_report

        log(f"report: {write_report(output_url)}")
    except Exception as exc:  # noqa: BLE001 - the output is complete without it
        log(f"report: not written ({type(exc).__name__}: {exc}); run `curate report {output_url}` to retry")


WARM_WORKERS = 8  # at most: task workers made ready while the score phase starts


@ray.remote(num_cpus=0)
def _ready_task_worker() -> None:
    """Import what the dedup and write tasks run. Ray ships this function by value, so nothing comes
    with it: Ray Data's task machinery (and pandas under it) is imported here too, about a second."""
    try:
        import ray.data  # noqa: F401
        import ray.data._internal.execution.operators.map_transformer  # noqa: F401 - what a map task runs

        import curation.dedup.cluster  # noqa: F401 - faiss and the dedup stages
        import curation.dedup.exact  # noqa: F401
        import curation.dedup.prepare  # noqa: F401
        import curation.job  # noqa: F401 - the write phase
    except Exception:  # noqa: BLE001 - only a head start: the phase's own tasks import again and report
        pass


def _warm_task_workers() -> None:
    """Make task workers ready for the dedup and write phases while the score phase starts its actors.
    A CPU actor embeds and commits by itself, so no task runs before dedup, whose first tasks would
    otherwise each start a worker process and import the package, Ray Data, pyarrow and faiss (seconds
    on a small cluster, where the actor start-up leaves cores idle meanwhile). Ray reuses idle workers."""
    workers = min(WARM_WORKERS, max(1, int(ray.cluster_resources().get("CPU", 1))))
    for _ in range(workers):
        _ready_task_worker.options(scheduling_strategy="SPREAD").remote()


def _pending(shards: list[Shard], paths: JobPaths) -> list[Shard]:
    return [s for s in shards if not paths.work.exists(paths.scored_name(s.shard_id))]


def _survive_node_loss(phase, log):
    """Run a phase again when a node died under it. Phases are idempotent: committed shards are
    skipped, decisions and final files are rewritten with the same bytes."""
    from ray.exceptions import ActorDiedError, NodeDiedError, ObjectLostError, OwnerDiedError, WorkerCrashedError

    lost = (ActorDiedError, NodeDiedError, ObjectLostError, OwnerDiedError, WorkerCrashedError)
    for attempt in range(NODE_LOSS_RETRIES + 1):
        try:
            return phase()
        except Exception as exc:
            user = user_error_in(exc)
            if user is not None:  # e.g. weights an actor could not load: one line, and no retry
                raise user from None
            if not isinstance(exc, lost) or attempt == NODE_LOSS_RETRIES:
                raise
            log(f"a Ray node or worker was lost ({type(exc).__name__}); running the phase again")


_REMOTE_USER_ERROR = re.compile(r"^curation\.errors\.UserError: (.+)$", re.MULTILINE)


def user_error_in(exc: BaseException) -> UserError | None:
    """The UserError behind a failure, also one raised in a Ray worker: Ray hands a task's exception
    back wrapped (and an actor constructor's only as the text of its traceback)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        error = todo.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, UserError):
            return error
        linked = (error.__cause__, error.__context__, getattr(error, "cause", None))
        todo += [e for e in linked if isinstance(e, BaseException)]
    found = _REMOTE_USER_ERROR.findall(str(exc))
    return UserError(found[-1]) if found else None


def _init_ray(cfg: Config) -> None:
    ctx = DataContext.get_current()
    ctx.target_max_block_size = LARGE_BLOCK
    # The sort-based shuffle starts no aggregator actors: far less fixed cost for small groupbys.
    ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    show = cfg.run.progress if cfg.run.progress is not None else sys.stdout.isatty()
    ctx.enable_progress_bars = show
    ctx.enable_operator_progress_bars = show
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    # Bars off is our choice (run.progress, or no terminal): no warning that they are off.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    address = _cluster_address(cfg)
    if address:
        check_ray_address(address)
    tune_this_process()
    try:
        ray.init(
            address=address or "local",  # never attach to a stray local cluster unasked
            num_cpus=None if address else cfg.run.num_cpus,
            runtime_env={"env_vars": allocator_env()},  # freed memory kept for reuse (allocator.py)
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
            configure_logging=True,
        )
    except ConnectionError as exc:
        raise UserError(
            strip_credentials(f"cannot reach Ray cluster at {address}: {exc}; check run.address / RAY_ADDRESS")
        ) from None
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _cluster_address(cfg: Config) -> str | None:
    return cfg.run.address or os.environ.get("RAY_ADDRESS")


def _score(pending: list[Shard], plan: StagePlan, paths: JobPaths, embed_dim: int, cfg: Config, log) -> dict:
    """Phase 1; returns the wall seconds spent in each stage, summed over the shards scored."""
    stage_seconds: dict[str, float] = {}
    if not pending:
        return stage_seconds
    items = [{"shard_id": s.shard_id, "url": s.url, "format": s.format} for s in pending]
    task_stages, actor_stages = _place_stages(plan, cfg)
    post_stages = plan.post
    max_shard_bytes = cfg.input.max_shard_bytes

    def read(batch: pa.Table) -> pa.Table:
        tables = [
            read_and_prepare(Shard(**row), task_stages, paths, embed_dim, max_shard_bytes) for row in batch.to_pylist()
        ]
        tables = [t for t in tables if t.num_rows]
        return pa.concat_tables(tables, promote_options="default") if tables else _empty_prepared()

    def commit(batch: pa.Table) -> pa.Table:
        try:
            return (
                _scored(finish_scoring(batch, post_stages, paths, embed_dim))
                if batch.num_rows
                else _SUMMARY.empty_table()
            )
        except Exception as exc:
            return _storage_failure(exc, paths)

    ds = ray.data.from_items(items, override_num_blocks=len(items))
    # With decode in tasks, the reading tasks declare the memory a decoded shard needs. With decode in a
    # CPU actor, the actor reads its shards itself and reading needs no CPU of its own (which the actors
    # might hold all of): what Ray Data's fusion of the two did, before the actors ran with no restarts
    # (NO_ACTOR_RESTARTS, which reading tasks cannot take, so the two would no longer fuse).
    reads_in_actor = len(actor_stages) > 1 and cfg.model.num_gpus <= 0
    if not reads_in_actor:
        resources = {"num_cpus": 1, "memory": DECODE_TASK_MEMORY} if len(actor_stages) == 1 else {"num_cpus": 1}
        ds = ds.map_batches(read, batch_size=None, batch_format="pyarrow", **resources)
    reader = read if reads_in_actor else None
    if _commit_in_actor(cfg):
        ds = _actor_pool(ds, actor_stages, cfg, post=post_stages, paths=paths, embed_dim=embed_dim, read=reader)
    else:
        ds = _actor_pool(ds, actor_stages, cfg, read=reader)
        ds = ds.map_batches(commit, batch_size=None, batch_format="pyarrow", num_cpus=0.5)
    done = 0
    for row in ds.iter_rows():
        if row["user_error"]:  # a full or read-only disk, say: one line, not a Ray task's traceback
            raise UserError(row["user_error"])
        done += 1
        for stage, seconds in json.loads(row["stage_seconds"]).items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds
        log(f"scored shard {row['shard_id']} ({row['rows']} rows) [{done}/{len(pending)}]")
    return {stage: round(seconds, 3) for stage, seconds in stage_seconds.items()}


def _commit_in_actor(cfg: Config) -> bool:
    """A CPU actor that decodes what it embeds also runs the post-embedding stages and commits: on a few
    cores that saves starting commit workers and handing every scored shard to them. A GPU actor leaves
    both to CPU tasks, to go on to its next batch at once."""
    return cfg.model.num_gpus <= 0 and cfg.decode.device == "cpu" and _decode_placement(cfg) == "actor"


def _actor_pool(
    ds,
    stages: list,
    cfg: Config,
    post: list | None = None,
    paths: JobPaths | None = None,
    embed_dim: int = 0,
    read=None,
):
    """The embedding actor pool: one whole block (an input shard) per call, `calls_per_actor` calls at
    once on each actor (in threads: the model and its weights are loaded once, and torch and Pillow let
    go of the GIL while they compute). With `post`, each call also runs the post-embedding stages and
    commits its shard (see _commit_in_actor); with `read`, it first reads its shard."""
    calls = calls_per_actor(cfg)
    return _map_batches(
        ds,
        _StageActor,
        fn_constructor_kwargs={"stages": stages, "post": post, "paths": paths, "embed_dim": embed_dim, "read": read},
        batch_size=None,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(
            size=_embed_actors(cfg), max_concurrent_calls_per_actor=calls, enable_true_multi_threading=calls > 1
        ),
        num_cpus=cfg.model.num_cpus,
        num_gpus=cfg.model.num_gpus or None,
    )


# Ray Data hands each actor its constructor (the map function) through the object store, and Ray cannot
# promise to restart such an actor: with restarts on, it logs an error-level line for every actor it
# creates, on every healthy run (ray-project/ray#53727). So the embedding actors are not restarted: a lost
# actor fails the phase, which _survive_node_loss runs again (committed shards are skipped).
NO_ACTOR_RESTARTS = {"max_restarts": 0}


def _map_batches(ds, fn, **kwargs):
    """`ds.map_batches` of the actor pool, with NO_ACTOR_RESTARTS. `max_restarts` is no named parameter
    of it: Ray Data takes it as one of the keyword remote args, and warns that it will take only named
    ones one day (the warning is silenced here, and only here; a Ray that takes no keyword remote args
    any more gets the actors it restarts by default)."""
    import inspect
    import warnings

    takes_remote_args = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(ds.map_batches).parameters.values()
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(fn, **kwargs, **(NO_ACTOR_RESTARTS if takes_remote_args else {}))


def run_actor_stages(cfg: Config, stages: list, blocks: list[pa.Table], columns: list[str]) -> pa.Table:
    """Benchmarks: `blocks` through the score phase's actor pool alone (as `_score` builds it);
    returns `columns` of the output rows."""
    _init_ray(cfg)
    ds = ray.data.from_arrow(blocks)
    ds = _actor_pool(ds, stages, cfg).select_columns(columns)
    try:
        return pa.concat_tables([ray.get(ref) for ref in ds.to_arrow_refs()])
    except Exception as exc:
        user = user_error_in(exc)  # e.g. weights an actor could not load: one line, as a job says it
        if user is not None:
            raise user from None
        raise


def start_ray(cfg: Config) -> None:
    """Start (or join) Ray as a job would: benchmarks time jobs on a running cluster."""
    _init_ray(cfg)


def _embed_actors(cfg: Config) -> int:
    """model.actors, or for `auto` one actor per num_gpus of the cluster's GPUs (one on CPU)."""
    if cfg.model.actors != "auto":
        return cfg.model.actors
    if cfg.model.num_gpus <= 0:
        return 1
    gpus = ray.cluster_resources().get("GPU", 0.0)
    if gpus < cfg.model.num_gpus:
        raise UserError(
            f"model.num_gpus={cfg.model.num_gpus} but the Ray cluster has {gpus:g} GPUs: "
            "set model.num_gpus=0 to embed on CPU, or start Ray on GPU nodes"
        )
    return max(1, int(gpus // cfg.model.num_gpus))


def _decode_placement(cfg: Config) -> str:
    if cfg.decode.placement != "auto":
        return cfg.decode.placement
    return "tasks" if cfg.model.num_gpus > 0 else "actor"


def calls_per_actor(cfg: Config) -> int:
    """model.calls_per_actor, or for `auto` one call per thread on a CPU actor that decodes what it embeds:
    each call decodes and embeds its own shard on one thread, so the cores never wait for each other (a
    forward pass on two threads runs only about 1.5x as fast as on one). Otherwise one call."""
    if cfg.model.calls_per_actor != "auto":
        return cfg.model.calls_per_actor
    if cfg.model.num_gpus <= 0 and cfg.decode.device == "cpu" and _decode_placement(cfg) == "actor":
        return cfg.model.threads
    return 1


def _place_stages(plan: StagePlan, cfg: Config) -> tuple[list, list]:
    """Split the CPU stages between the reading tasks and the embedding actor; returns (task stages,
    actor stages), the embedding stage last.

    In tasks (`decode.placement: tasks`, the default on GPU actors) decode and the filters run in
    parallel CPU tasks and Ray Data's streaming executor feeds the actors, applying backpressure, so
    a GPU never waits on one decoder. In the actor (the default on CPU actors) a batch is decoded where
    it is embedded: on a few cores this saves the hand-off of every pixel through the object store.
    GPU decode (`decode.device: gpu`) runs in the actor, on its device; the stages listed after decode
    go with it, since they read what decode fills in.
    """
    from curation.stages.decode import DecodeStage

    stages = list(plan.cpu)
    threads = max(1, cfg.model.threads // calls_per_actor(cfg))  # each concurrent call's share
    embed = replace(plan.embed, torch_threads=threads)
    if cfg.decode.device == "gpu":
        from curation.stages.gpu_decode import GpuDecodeStage  # imports torch: only when asked for

        at = next(i for i, stage in enumerate(stages) if isinstance(stage, DecodeStage))
        decode = stages[at]
        gpu = GpuDecodeStage(image_size=decode.image_size, max_pixels=decode.max_pixels, device=_decode_device(cfg))
        return stages[:at], [gpu, *stages[at + 1 :], embed]
    if _decode_placement(cfg) == "tasks":
        return stages, [embed]
    # In the actor, a call decodes before its forward pass, never beside it: it gets the call's threads.
    threaded = [replace(s, threads=threads) if type(s) is DecodeStage else s for s in stages]
    return [], [*threaded, embed]


def _decode_device(cfg: Config) -> str:
    """GPU decode runs on the embedding model's device: CUDA on GPU actors, CPU (same code) otherwise."""
    if cfg.model.device != "auto":
        return cfg.model.device
    return "auto" if cfg.model.num_gpus > 0 else "cpu"


_SUMMARY = pa.schema(
    [("shard_id", pa.string()), ("rows", pa.int64()), ("stage_seconds", pa.string()), ("user_error", pa.string())]
)


def _scored(summary: pa.Table) -> pa.Table:
    """finish_scoring's summary of shards committed, as the score phase's rows (with no error)."""
    return summary.append_column("user_error", pa.nulls(summary.num_rows, pa.string())).cast(_SUMMARY)


def _storage_failure(exc: Exception, paths: JobPaths) -> pa.Table:
    """A storage error an operator can fix, as a summary row the driver turns into one line (raised in
    the task, Ray Data would log it with its traceback first); any other error is raised."""
    problem = storage_problem_in(exc, paths.output_url)
    if problem is None:
        raise exc
    row = {"shard_id": [""], "rows": [0], "stage_seconds": ["{}"], "user_error": [str(problem)]}
    return pa.table(row, schema=_SUMMARY)


def _empty_prepared() -> pa.Table:
    return pa.table({"source": pa.array([], pa.string())})


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
        read_json(paths.out, "_manifest.json", keys={"config_digest": str, "inputs": list, "funnel": dict})
        if paths.out.exists("_manifest.json")
        else None
    )
    inputs = manifest and [i.get("url") if isinstance(i, dict) else None for i in manifest["inputs"]]
    if manifest is None or None in inputs:
        raise UserError(
            f"{output} holds _SUCCESS but no readable _manifest.json of this tool (another tool's output, or a "
            "damaged one): choose a new --output, or delete that directory to start over"
        )
    if manifest["config_digest"] == digest and inputs == [strip_credentials(s.url) for s in shards]:
        return manifest
    raise UserError(f"{output} already holds a completed run of another config or inputs: choose a new --output")


def _versions() -> dict:
    names = ("ray", "pyarrow", "torch", "open_clip_torch", "pillow", "numpy")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"curation": __version__, "python": platform.python_version(), **found}


def _manifest(cfg, model_id, shards, results, timings, attempt, resumed_shards) -> dict:
    by_id = {r["shard_id"]: r for r in results}
    inputs = [
        {"shard_id": s.shard_id, "url": strip_credentials(s.url), "format": s.format, "rows": by_id[s.shard_id]["rows"]}
        for s in shards
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "inputs": inputs,
        "shards": results,
        "config": strip_credentials_in(cfg.model_dump(mode="json")),  # e.g. run.address ray://user:pw@head
        "config_digest": cfg.digest(),
        "model_id": model_id,
        "versions": _versions(),
        "funnel": funnel(sum(i["rows"] for i in inputs), results),
        "resume": {"attempt": attempt, "shards_scored_in_earlier_attempts": resumed_shards},
        "timings": timings,
    }
