"""Where the score phase's stages run (tasks, actor, device decode), and the per-stage time split."""

from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest

from curation.config import load_config
from curation.errors import UserError
from curation.io.commit import read_parquet
from curation.io.readers import read_shard
from curation.io.sources import list_shards
from curation.job import JobPaths, read_and_prepare, run_stages
from curation.models.clip import model_info
from curation.phases.score import StageActor, calls_per_actor, commit_in_actor, embed_actors, place_stages
from curation.plan import StagePlan
from curation.runner import run_job
from curation.stages.decode import DecodeStage
from curation.stages.gpu_decode import GpuDecodeStage


def plan_for(*overrides):
    cfg = load_config(None, list(overrides))
    return cfg, StagePlan.build(cfg, model_info(cfg.model))


def in_actor(plan, threads):
    """plan.cpu then embed, decode and the forward pass with a call's threads (decode runs before the
    forward pass there)."""
    return [replace(s, threads=threads) if type(s) is DecodeStage else s for s in plan.cpu] + [
        replace(plan.embed, torch_threads=threads)
    ]


def test_cpu_actors_decode_in_the_actor_by_default_one_call_per_thread():
    cfg, plan = plan_for()
    tasks, actor = place_stages(plan, cfg)
    assert calls_per_actor(cfg) == 2  # model.threads: each call decodes and embeds its shard on one thread
    assert tasks == [] and actor == in_actor(plan, 1)
    cfg, plan = plan_for("model.threads=3")
    assert calls_per_actor(cfg) == 3 and place_stages(plan, cfg)[1] == in_actor(plan, 1)
    cfg, plan = plan_for("model.threads=4", "model.calls_per_actor=2")
    assert place_stages(plan, cfg)[1] == in_actor(plan, 2)
    cfg, plan = plan_for("model.calls_per_actor=1")
    assert place_stages(plan, cfg)[1] == in_actor(plan, 2)  # one call: all the actor's threads


def test_gpu_actors_decode_in_tasks_by_default():
    cfg, plan = plan_for("model.num_gpus=1")
    tasks, actor = place_stages(plan, cfg)
    assert calls_per_actor(cfg) == 1
    assert tasks == plan.cpu and actor == [replace(plan.embed, torch_threads=cfg.model.threads)]
    assert next(s for s in tasks if isinstance(s, DecodeStage)).threads == 1  # a task: one CPU
    cfg, plan = plan_for("model.num_gpus=1", "decode.placement=actor")
    assert calls_per_actor(cfg) == 1 and place_stages(plan, cfg)[1] == in_actor(plan, cfg.model.threads)
    cfg, plan = plan_for("decode.placement=tasks")  # CPU actors behind decoding tasks: one call too
    assert calls_per_actor(cfg) == 1


def test_gpu_decode_moves_decode_and_later_stages_to_the_actor():
    cfg, plan = plan_for("decode.device=gpu")
    tasks, actor = place_stages(plan, cfg)
    at = next(i for i, s in enumerate(plan.cpu) if isinstance(s, DecodeStage))
    assert calls_per_actor(cfg) == 1
    assert tasks == plan.cpu[:at]
    assert isinstance(actor[0], GpuDecodeStage) and actor[0].device == "cpu"  # no GPU asked: same code on CPU
    assert actor[1:] == [*plan.cpu[at + 1 :], replace(plan.embed, torch_threads=cfg.model.threads)]
    cfg, plan = plan_for("decode.device=gpu", "model.num_gpus=1")
    assert place_stages(plan, cfg)[1][0].device == "auto"


def test_an_actor_that_reads_its_shards_declares_memory_by_their_size_and_fits_a_node(ray_local, tmp_path, monkeypatch):
    import curation.phases.score as score
    from curation.job import JobPaths

    cfg, plan = plan_for()
    size = plan.embed.image_size
    small, large = score.actor_memory(cfg, size, 10 << 20), score.actor_memory(cfg, size, 80 << 20)
    assert large - small >= calls_per_actor(cfg) * score.SHARD_COPIES * (70 << 20)  # per concurrent call
    assert score.ACTOR_RUNTIME_BYTES < small < large
    node = max(n["Resources"]["memory"] for n in ray_local.nodes() if n["Alive"])
    assert large < 0.8 * node  # the test cluster (2 CPUs) places it
    assert score.actor_memory(cfg, size, 1 << 40) == int(0.8 * node)  # never more than a node has

    (tmp_path / "a.parquet").write_bytes(b"x" * 5000)
    (tmp_path / "b.csv").write_bytes(b"url\n" + b"x" * 96)
    paths = JobPaths(output_url=str(tmp_path / "out"), work_url=str(tmp_path / "work"))
    shards = [
        score.Shard(shard_id="a", url=str(tmp_path / "a.parquet"), format="parquet"),
        score.Shard(shard_id="b", url=str(tmp_path / "b.csv"), format="urls"),
    ]
    assert score.shard_bytes(shards[:1], cfg, paths) == 5000
    assert score.shard_bytes(shards, cfg, paths) == 100 * score.URL_LIST_EXPANSION  # downloads to come
    gone = [score.Shard(shard_id="c", url=str(tmp_path / "c.tar"), format="webdataset")]
    assert score.shard_bytes(gone, cfg, paths) == cfg.input.max_shard_bytes


def test_calls_per_actor_must_be_positive():
    with pytest.raises(UserError, match="calls_per_actor"):
        load_config(None, ["model.calls_per_actor=0"])


def test_actor_count():
    assert embed_actors(load_config(None, [])) == 1
    assert embed_actors(load_config(None, ["model.actors=3"])) == 3


@pytest.mark.ray
def test_gpu_actors_on_a_cluster_without_gpus_is_a_user_error(ray_local):
    with pytest.raises(UserError, match="num_gpus"):
        embed_actors(load_config(None, ["model.num_gpus=1"]))


@pytest.mark.ray
def test_a_user_error_in_the_benchmarks_actor_pool_is_one_line(ray_local):
    """An actor that cannot set up its stages (builtin heads on random weights) fails the benchmark's
    actor-pool run with the UserError itself, not Ray's traceback of the actor's death."""
    from curation.phases.score import run_actor_stages

    cfg, plan = plan_for("model.pretrained=null", "model.threads=1")
    block = pa.table(
        {"key": ["b/0"], "caption": ["a cat"], "pixels": pa.array([None], pa.binary()), "status": ["kept"]}
    )
    with pytest.raises(UserError, match="builtin head weights ship with model.pretrained builtin only"):
        run_actor_stages(cfg, [plan.embed], [block], ["key"])


@pytest.mark.ray
def test_device_decode_job_rejects_like_the_cpu_decoder(ray_local, small_world, tmp_path):
    root, truth = small_world
    cfg = load_config(None, ["decode.device=gpu", "model.threads=1"])
    result = run_job(cfg, str(root), str(tmp_path / "out"), log=lambda line: None)

    columns = ["key", "status", "reject_reason", "reject_stage", "width", "height", "sha256"]
    rows = pa.concat_tables(
        pads.dataset(str(tmp_path / "out" / part), format="parquet").to_table(columns=columns)
        for part in ("kept", "rejected")
    )
    assert rows.num_rows == truth["rows"] == result.manifest["funnel"]["input"]

    # the CPU path, without Ray, on the same shards
    default, plan = plan_for()
    expected = pa.concat_tables(
        [run_stages(plan.cpu, read_shard(shard)) for shard in list_shards(str(root), "auto")], promote_options="default"
    )
    early = {"read", "download", "decode", "basic"}

    def early_rejections(table):
        return {
            key: reason
            for key, reason, stage in zip(
                *(table.column(c).to_pylist() for c in ("key", "reject_reason", "reject_stage"))
            )
            if stage in early
        }

    assert early_rejections(rows) == early_rejections(expected)
    assert any(stage == "decode" for stage in rows.column("reject_stage").to_pylist())
    by_key = {
        k: (w, h, s) for k, w, h, s in zip(*(rows.column(c).to_pylist() for c in ("key", "width", "height", "sha256")))
    }
    for k, w, h, s in zip(*(expected.column(c).to_pylist() for c in ("key", "width", "height", "sha256"))):
        assert by_key[k] == (w, h, s)

    stages = result.manifest["timings"]["stages"]
    assert {"read", "decode", "basic", "embed", "heads", "clip", "commit"} <= set(stages)
    assert stages["decode"] > 0 and stages["embed"] > 0
    assert sum(stages.values()) <= result.manifest["timings"]["score_s"] * 2 + 1  # at most 2 workers busy at once


def test_cpu_actors_commit_what_they_score_gpu_actors_leave_it_to_tasks():
    assert commit_in_actor(load_config(None, []))
    for overrides in (["model.num_gpus=1"], ["decode.placement=tasks"], ["decode.device=gpu"]):
        assert not commit_in_actor(load_config(None, overrides)), overrides


def test_actor_with_post_stages_commits_its_shard_and_returns_the_summary(small_world, tmp_path):
    root, _truth = small_world
    cfg, plan = plan_for("model.threads=1")
    paths = JobPaths(output_url=str(tmp_path / "out"), work_url=str(tmp_path / "work"))
    _tasks, stages = place_stages(plan, cfg)
    actor = StageActor(stages, post=plan.post, paths=paths, schema=plan.schema)
    shard = list_shards(str(root), "auto")[0]
    prepared = read_and_prepare(shard, [], paths, plan.schema)

    summary = actor(prepared)
    assert summary.column("shard_id").to_pylist() == [shard.shard_id]
    assert summary.column("rows").to_pylist() == [prepared.num_rows]
    scored = read_parquet(paths.work, paths.scored_name(shard.shard_id))
    assert scored.num_rows == prepared.num_rows
    kept = scored.filter(pc.equal(scored.column("status"), "kept"))
    assert kept.num_rows and kept.column("img_emb").null_count == 0
    assert actor(prepared.slice(0, 0)).num_rows == 0  # an empty shard was committed where it was read


@pytest.mark.ray
def test_phases_after_scoring_give_each_task_several_shards(ray_local):
    from curation.execution import SHARDS_PER_TASK
    from curation.execution import task_blocks as _task_blocks

    cpus = int(ray_local.cluster_resources()["CPU"])
    assert cpus == 2
    assert [_task_blocks(n) for n in (1, 3, 4, 20)] == [1, 3, 4, 4]  # two tasks per CPU, at most one per shard
    assert _task_blocks(1000) == -(-1000 // SHARDS_PER_TASK)  # no task holds more than SHARDS_PER_TASK shards
