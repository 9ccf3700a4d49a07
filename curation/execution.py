"""Ray plumbing shared by the job's phases: starting (or joining) Ray, warming task workers, running a
phase again when a node is lost, and turning a remote UserError back into one line. The only place that
calls ray.init."""

from __future__ import annotations

import logging
import os
import re
import sys

from curation.allocator import allocator_env, tune_this_process
from curation.config import Config
from curation.errors import UserError, errors_behind
from curation.io.urls import strip_credentials
from curation.ray_address import check_ray_address

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402
from ray.data import DataContext  # noqa: E402
from ray.data.context import ShuffleStrategy  # noqa: E402

LARGE_BLOCK = 4 << 30  # one input shard is one block: never split it


NODE_LOSS_RETRIES = 2


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


def warm_task_workers() -> None:
    """Make task workers ready for the dedup and write phases while the score phase starts its actors.
    A CPU actor embeds and commits by itself, so no task runs before dedup, whose first tasks would
    otherwise each start a worker process and import the package, Ray Data, pyarrow and faiss (seconds
    on a small cluster, where the actor start-up leaves cores idle meanwhile). Ray reuses idle workers."""
    workers = min(WARM_WORKERS, max(1, int(ray.cluster_resources().get("CPU", 1))))
    for _ in range(workers):
        _ready_task_worker.options(scheduling_strategy="SPREAD").remote()


def survive_node_loss(phase, log):
    """Run a phase again when a node died under it. Phases are idempotent: committed shards are
    skipped, decisions and final files are rewritten with the same bytes."""
    from ray.exceptions import NodeDiedError, ObjectLostError, OwnerDiedError, RayActorError, WorkerCrashedError

    # RayActorError: an actor that died, or that became unavailable as its node went (the embedding
    # actors are not restarted: see phases/score.py, NO_ACTOR_RESTARTS).
    lost = (RayActorError, NodeDiedError, ObjectLostError, OwnerDiedError, WorkerCrashedError)
    for attempt in range(NODE_LOSS_RETRIES + 1):
        try:
            return phase()
        except Exception as exc:
            user = user_error_in(exc)
            if user is not None:  # e.g. weights an actor could not load: one line, and no retry
                raise user from None
            if not any(isinstance(error, lost) for error in errors_behind(exc)) or attempt == NODE_LOSS_RETRIES:
                raise
            log(f"a Ray node or worker was lost ({type(exc).__name__}); running the phase again")


_REMOTE_USER_ERROR = re.compile(r"^curation\.errors\.UserError: (.+)$", re.MULTILINE)


def user_error_in(exc: BaseException) -> UserError | None:
    """The UserError behind a failure, also one raised in a Ray worker: Ray hands a task's exception
    back wrapped (and an actor constructor's only as the text of its traceback)."""
    from ray.exceptions import RayError

    users = [error for error in errors_behind(exc) if isinstance(error, UserError)]
    if users:  # the one raised, not Ray's wrapper of it (a RayTaskError that is also a UserError, traceback and all)
        return next((error for error in users if not isinstance(error, RayError)), users[0])
    found = _REMOTE_USER_ERROR.findall(str(exc))
    return UserError(found[-1]) if found else None


def init_ray(cfg: Config) -> None:
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
    address = cluster_address(cfg)
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


def cluster_address(cfg: Config) -> str | None:
    return cfg.run.address or os.environ.get("RAY_ADDRESS")


# ---- scheduling the phases after scoring ---------------------------------------------------------

SHARDS_PER_TASK = 16  # at most, in the phases after scoring, once every CPU has two tasks


def task_blocks(n_shards: int) -> int:
    """Blocks (one task each, its shards handled one after another) for a phase that reads or writes
    whole shards: two per CPU of the cluster, so that the tasks even out, never more than one per shard,
    and more where a task would hold over SHARDS_PER_TASK shards (a retried task redoes them all). A
    task per shard would pay Ray's gap between tasks (~0.15 s on the 2-core box) for every shard."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, min(n_shards, max(2 * cpus, -(-n_shards // SHARDS_PER_TASK))))


ROWS_PER_PARTITION = 1_000_000  # dedup columns ~1.1 KiB a row: ~1-2 GiB per groupby task (docs/sizing.md)


def partition_count(n_shards: int, total_rows: int = 0) -> int:
    """Groupby partitions: one per shard up to 512, and more for large jobs, so that no task holds
    much more than ROWS_PER_PARTITION rows of the dedup columns."""
    return max(2, min(n_shards, 512), -(-total_rows // ROWS_PER_PARTITION))


def over_items(items: list[dict], fn, **map_args):
    """A dataset of `fn` applied to `items` (one dict each, e.g. a shard's file name) by task_blocks tasks,
    each handed its whole block as an Arrow table."""
    ds = ray.data.from_items(items, override_num_blocks=task_blocks(len(items)))
    return ds.map_batches(fn, batch_size=None, batch_format="pyarrow", **map_args)


def co_located(rows, column: str, partitions: int):
    """The rows shuffled so that each block holds whole groups of equal `column`, as map_groups does it
    (but the block is then handed over whole: one call per block, not one per value): a hash shuffle,
    or with the sort-based shuffle (init_ray) a sort, whose ranges never split a value."""
    if rows.context.shuffle_strategy in (ShuffleStrategy.HASH_SHUFFLE, ShuffleStrategy.SHUFFLE_V2):
        return rows.repartition(partitions, keys=[column], sort=True)
    return rows.sort(column)


def collect(ds) -> list:
    """A small dataset's non-empty Arrow tables, on the driver (a sample, a histogram: never rows' data)."""
    return [t for t in (ray.get(ref) for ref in ds.to_arrow_refs()) if t.num_rows]


def in_task(fn, *args):
    """`fn(*args)` in a one-CPU task (retried where its node dies), its result on the driver."""
    return ray.get(ray.remote(num_cpus=1, max_retries=3)(fn).remote(*args))
