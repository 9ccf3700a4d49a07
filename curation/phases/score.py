"""Phase 1 on Ray Data: input shards streamed through reading (+ decode and the CPU filters) tasks, the
embedding actor pool and a commit, one Ray block per input shard, skipping shards already committed.
What each stage does is Ray-free (curation/stages/, curation/job.py); this module schedules it."""

from __future__ import annotations

import json
from dataclasses import replace

import pyarrow as pa
import ray
from ray.data import ActorPoolStrategy

from curation.config import Config
from curation.errors import UserError
from curation.execution import init_ray, user_error_in
from curation.io.sources import Shard
from curation.io.storage import storage_problem_in
from curation.job import SUMMARY_SCHEMA, JobPaths, finish_scoring, read_and_prepare, run_stages
from curation.plan import StagePlan

DECODE_TASK_MEMORY = 512 << 20  # a reading+decoding task: one shard's bytes and its model-sized pixels

# What a CPU embedding actor that reads its own shards holds (actor_memory). Measured with the tiny CLIP
# (2 calls at once, web JPEGs of ~80 KB in Parquet shards of 10, 41 and 82 MB): 0.7-0.9 GiB once loaded,
# 1.4, 2.5 and 3.1 GiB at peak.
ACTOR_RUNTIME_BYTES = 768 << 20  # torch, the Ray worker and the model's code; its weights come on top
UNKNOWN_WEIGHTS_BYTES = 1 << 30  # the weights of an open_clip tag (ViT-B-32's are 0.6 GB, ViT-L-14's 1.7)
CALL_BYTES = 256 << 20  # each concurrent call: decoder buffers and the allocator arena its thread keeps
SHARD_COPIES = 12  # a shard's bytes: as read, as the Arrow column, as Python bytes for the decoder, and
#                    what the allocators keep of each for the next shard (curation/allocator.py)
WEB_IMAGE_BYTES = 100 << 10  # a web JPEG: a shard's rows are about its bytes / this (for the pixels)
URL_LIST_EXPANSION = 1000  # a URL list's ~100-byte line brings a ~100 KB image when downloaded
MEMORY_SAMPLE = 64  # shard files whose size is asked for (the largest one counts)


class StageActor:
    """Holds the actor's stages (the embedding stage, after any CPU stages placed in the actor) and,
    with `post`, the post-embedding stages and the commit of each shard (a call then returns its
    shard's summary row, see score). Their models load once, in the constructor. With `read`, a call
    gets the shard to read (see score), not its rows."""

    def __init__(self, stages, post=None, paths: JobPaths | None = None, schema: pa.Schema | None = None, read=None):
        self.stages, self.post, self.read = stages, post, read
        self.paths, self.schema = paths, schema
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
            return _scored(finish_scoring(table, self.post, self.paths, self.schema))
        except Exception as exc:
            return _storage_failure(exc, self.paths)


def score(pending: list[Shard], plan: StagePlan, paths: JobPaths, cfg: Config, log, tally) -> dict:
    """Phase 1; returns the wall seconds spent in each stage, summed over the shards scored. Without a model
    (plan.embed None) the reading tasks run every stage and commit: no actor is started."""
    stage_seconds: dict[str, float] = {}
    if not pending:
        return stage_seconds
    items = [{"shard_id": s.shard_id, "url": s.url, "format": s.format} for s in pending]
    task_stages, actor_stages = place_stages(plan, cfg)
    post_stages, schema = plan.post, plan.schema
    max_shard_bytes = cfg.input.max_shard_bytes

    def read(batch: pa.Table) -> pa.Table:
        tables = [
            read_and_prepare(Shard(**row), task_stages, paths, schema, max_shard_bytes) for row in batch.to_pylist()
        ]
        tables = [t for t in tables if t.num_rows]
        return pa.concat_tables(tables, promote_options="default") if tables else empty_prepared()

    def commit(batch: pa.Table) -> pa.Table:
        try:
            return (
                _scored(finish_scoring(batch, post_stages, paths, schema)) if batch.num_rows else _SUMMARY.empty_table()
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
        resources = {"num_cpus": 1, "memory": DECODE_TASK_MEMORY} if len(actor_stages) <= 1 else {"num_cpus": 1}
        ds = ds.map_batches(read, batch_size=None, batch_format="pyarrow", **resources)
    reader = read if reads_in_actor else None
    # An actor that reads its shards holds them: it declares the memory that takes, so Ray places it by it.
    memory = actor_memory(cfg, plan.embed.image_size, shard_bytes(pending, cfg, paths)) if reads_in_actor else None
    if not actor_stages:
        ds = ds.map_batches(commit, batch_size=None, batch_format="pyarrow", num_cpus=0.5)
    elif commit_in_actor(cfg):
        ds = actor_pool(ds, actor_stages, cfg, post=post_stages, paths=paths, schema=schema, read=reader, memory=memory)
    else:
        ds = actor_pool(ds, actor_stages, cfg, read=reader, memory=memory)
        ds = ds.map_batches(commit, batch_size=None, batch_format="pyarrow", num_cpus=0.5)
    done = 0
    for row in ds.iter_rows():
        if row["user_error"]:  # a full or read-only disk, say: one line, not a Ray task's traceback
            raise UserError(row["user_error"])
        done += 1
        for stage, seconds in json.loads(row["stage_seconds"]).items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds
        log(f"scored shard {row['shard_id']} ({row['rows']} rows) [{done}/{len(pending)}]")
        tally.observe(row["rows"], row["outside_domain"])
    return {stage: round(seconds, 3) for stage, seconds in stage_seconds.items()}


def commit_in_actor(cfg: Config) -> bool:
    """A CPU actor that decodes what it embeds also runs the post-embedding stages and commits: on a few
    cores that saves starting commit workers and handing every scored shard to them. A GPU actor leaves
    both to CPU tasks, to go on to its next batch at once."""
    return cfg.model.num_gpus <= 0 and cfg.decode.device == "cpu" and decode_placement(cfg) == "actor"


def actor_pool(
    ds,
    stages: list,
    cfg: Config,
    post: list | None = None,
    paths: JobPaths | None = None,
    schema: pa.Schema | None = None,
    read=None,
    memory: int | None = None,
):
    """The embedding actor pool: one whole block (an input shard) per call, `calls_per_actor` calls at
    once on each actor (in threads: the model and its weights are loaded once, and torch and Pillow let
    go of the GIL while they compute). With `post`, each call also runs the post-embedding stages and
    commits its shard (see commit_in_actor); with `read`, it first reads its shard. `memory`: the bytes
    each actor declares to Ray (actor_memory)."""
    calls = calls_per_actor(cfg)
    return _map_batches(
        ds,
        StageActor,
        fn_constructor_kwargs={"stages": stages, "post": post, "paths": paths, "schema": schema, "read": read},
        batch_size=None,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(
            size=embed_actors(cfg), max_concurrent_calls_per_actor=calls, enable_true_multi_threading=calls > 1
        ),
        num_cpus=cfg.model.num_cpus,
        num_gpus=cfg.model.num_gpus or None,
        **({"memory": memory} if memory else {}),
    )


def actor_memory(cfg: Config, image_size: int, shard_bytes: int) -> int:
    """The memory a CPU embedding actor that reads its shards declares: its runtime and weights, and for
    each of its concurrent calls a shard of `shard_bytes` in its forms (SHARD_COPIES), its model-sized
    pixels and a batch's float pixels. At most 80 % of the largest node's memory (per actor placed there):
    an estimate that no node could grant would leave the job waiting forever."""
    pixels = shard_bytes // WEB_IMAGE_BYTES * image_size * image_size * 3
    batch = cfg.model.batch_size * image_size * image_size * 3 * 4 * 2  # float32 pixels, normalised copy
    call = CALL_BYTES + SHARD_COPIES * shard_bytes + pixels + batch
    wanted = ACTOR_RUNTIME_BYTES + weights_bytes(cfg) + calls_per_actor(cfg) * call
    nodes = [n["Resources"].get("memory", 0.0) for n in ray.nodes() if n.get("Alive")] or [wanted / 0.8]
    per_node = -(-embed_actors(cfg) // len(nodes))
    return int(min(wanted, 0.8 * max(nodes) / per_node))


def weights_bytes(cfg: Config) -> int:
    """The size of the model's weights file where it is on this disk (builtin, a local path)."""
    from curation.models.files import BUILTIN
    from curation.models.info import builtin_weights
    from curation.models.weights import local_weights_path

    pretrained = cfg.model.pretrained
    if not pretrained:
        return UNKNOWN_WEIGHTS_BYTES // 4  # random init: a small model, as tests use
    try:
        path = builtin_weights(cfg.model.arch) if pretrained == BUILTIN else local_weights_path(pretrained)
    except UserError:
        path = None
    return path.stat().st_size if path is not None else UNKNOWN_WEIGHTS_BYTES


def shard_bytes(pending: list[Shard], cfg: Config, paths: JobPaths) -> int:
    """The bytes the largest of (a sample of) the pending shards brings into memory: its file's size (a URL
    list's times URL_LIST_EXPANSION), at most input.max_shard_bytes; that cap where sizes are unknown."""
    from concurrent.futures import ThreadPoolExecutor

    import fsspec

    cap = cfg.input.max_shard_bytes
    step = max(1, len(pending) // MEMORY_SAMPLE)

    def size(shard: Shard) -> int:
        try:
            fs, path = fsspec.core.url_to_fs(shard.url, **paths.storage_options)
            found = int(fs.info(path).get("size") or cap)
        except Exception:  # noqa: BLE001 - only an estimate: the reader reports what is wrong with the file
            return cap
        return found * URL_LIST_EXPANSION if shard.format == "urls" else found

    with ThreadPoolExecutor(8) as pool:
        return min(cap, max(pool.map(size, pending[::step]), default=cap))


# Ray Data hands each actor its constructor (the map function) through the object store, and Ray cannot
# promise to restart such an actor: with restarts on, it logs an error-level line for every actor it
# creates, on every healthy run (ray-project/ray#53727). So the embedding actors are not restarted: a lost
# actor fails the phase, which survive_node_loss runs again (committed shards are skipped).
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
    """Benchmarks: `blocks` through the score phase's actor pool alone (as `score` builds it);
    returns `columns` of the output rows."""
    init_ray(cfg)
    ds = ray.data.from_arrow(blocks)
    ds = actor_pool(ds, stages, cfg).select_columns(columns)
    try:
        return pa.concat_tables([ray.get(ref) for ref in ds.to_arrow_refs()])
    except Exception as exc:
        user = user_error_in(exc)  # e.g. weights an actor could not load: one line, as a job says it
        if user is not None:
            raise user from None
        raise


def start_ray(cfg: Config) -> None:
    """Start (or join) Ray as a job would: benchmarks time jobs on a running cluster."""
    init_ray(cfg)


def embed_actors(cfg: Config) -> int:
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


def decode_placement(cfg: Config) -> str:
    if cfg.decode.placement != "auto":
        return cfg.decode.placement
    return "tasks" if cfg.model.num_gpus > 0 else "actor"


def calls_per_actor(cfg: Config) -> int:
    """model.calls_per_actor, or for `auto` one call per thread on a CPU actor that decodes what it embeds:
    each call decodes and embeds its own shard on one thread, so the cores never wait for each other (a
    forward pass on two threads runs only about 1.5x as fast as on one). Otherwise one call."""
    if cfg.model.calls_per_actor != "auto":
        return cfg.model.calls_per_actor
    if cfg.model.num_gpus <= 0 and cfg.decode.device == "cpu" and decode_placement(cfg) == "actor":
        return cfg.model.threads
    return 1


def place_stages(plan: StagePlan, cfg: Config) -> tuple[list, list]:
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
    if plan.embed is None:
        return stages, []
    threads = max(1, cfg.model.threads // calls_per_actor(cfg))  # each concurrent call's share
    embed = replace(plan.embed, torch_threads=threads)
    if cfg.decode.device == "gpu":
        from curation.stages.gpu_decode import GpuDecodeStage  # imports torch: only when asked for

        at = next(i for i, stage in enumerate(stages) if isinstance(stage, DecodeStage))
        decode = stages[at]
        gpu = GpuDecodeStage(image_size=decode.image_size, max_pixels=decode.max_pixels, device=decode_device(cfg))
        return stages[:at], [gpu, *stages[at + 1 :], embed]
    if decode_placement(cfg) == "tasks":
        return stages, [embed]
    # In the actor, a call decodes before its forward pass, never beside it: it gets the call's threads.
    threaded = [replace(s, threads=threads) if type(s) is DecodeStage else s for s in stages]
    return [], [*threaded, embed]


def decode_device(cfg: Config) -> str:
    """GPU decode runs on the embedding model's device: CUDA on GPU actors, CPU (same code) otherwise."""
    if cfg.model.device != "auto":
        return cfg.model.device
    return "auto" if cfg.model.num_gpus > 0 else "cpu"


_SUMMARY = SUMMARY_SCHEMA.append(pa.field("user_error", pa.string()))


def _scored(summary: pa.Table) -> pa.Table:
    """finish_scoring's summary of shards committed, as the score phase's rows (with no error)."""
    return summary.append_column("user_error", pa.nulls(summary.num_rows, pa.string())).cast(_SUMMARY)


def _storage_failure(exc: Exception, paths: JobPaths) -> pa.Table:
    """A storage error an operator can fix, as a summary row the driver turns into one line (raised in
    the task, Ray Data would log it with its traceback first); any other error is raised."""
    problem = storage_problem_in(exc, paths.output_url)
    if problem is None:
        raise exc
    row = {"shard_id": [""], "rows": [0], "stage_seconds": ["{}"], "outside_domain": [0], "user_error": [str(problem)]}
    return pa.table(row, schema=_SUMMARY)


def empty_prepared() -> pa.Table:
    return pa.table({"source": pa.array([], pa.string())})
