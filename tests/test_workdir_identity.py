"""A work dir knows what its scored shards were scored with: a resume with another model's weights, another
record schema or another package version is refused with one line, or rescored with --rescore."""

from __future__ import annotations

import json
import shutil

import pyarrow.dataset as pads
import pytest
from safetensors.torch import load_file, save_file

from curation import workdir
from curation.config import load_config
from curation.errors import UserError
from curation.io.sources import list_shards
from curation.job import JobPaths
from curation.manifest import inputs_digest
from curation.models.info import builtin_weights
from curation.runner import run_job

CFG = load_config()


def _paths(tmp_path) -> JobPaths:
    return JobPaths(output_url=str(tmp_path / "out"), work_url=str(tmp_path / "out" / "_work"))


def test_a_fresh_work_dir_records_what_it_is_scored_with(small_world, tmp_path):
    paths, shards = _paths(tmp_path), list_shards(str(small_world[0]), "auto")
    assert workdir.check_or_claim_work_dir(paths, CFG, "input", shards, "arch:w@abc") == 1
    job = json.loads(paths.work.read_bytes("job.json"))
    assert job["scored_with"] == {
        "schema_version": workdir.SCHEMA_VERSION,
        "package_version": "0.1.0",
        "model": "arch:w@abc",
    }
    assert workdir.check_or_claim_work_dir(paths, CFG, "input", shards, "arch:w@abc") == 2
    # The inputs as their count and digest, not a list of every URL: a few bytes at any number of shards.
    assert job["inputs"] == {"shards": len(shards), "digest": inputs_digest(s.url for s in shards)}
    with pytest.raises(UserError, match="another config or inputs"):
        workdir.check_or_claim_work_dir(paths, CFG, "input", shards[1:], "arch:w@abc")


@pytest.mark.parametrize(
    "earlier, changed",
    [
        ({"model": "arch:w@old"}, "model arch:w@old -> arch:w@abc"),
        ({"schema_version": 1}, f"schema_version 1 -> {workdir.SCHEMA_VERSION}"),
        ({"package_version": "0.0.9"}, "package_version 0.0.9 -> 0.1.0"),
    ],
)
def test_a_resume_scored_with_something_else_is_refused_or_rescored(small_world, tmp_path, earlier, changed):
    paths, shards = _paths(tmp_path), list_shards(str(small_world[0]), "auto")
    workdir.check_or_claim_work_dir(paths, CFG, "input", shards, "arch:w@abc")
    job = json.loads(paths.work.read_bytes("job.json"))
    job["scored_with"].update(earlier)
    paths.work.write_bytes(json.dumps(job).encode(), "job.json")
    paths.work.write_bytes(b"stale", "scored", "00000.parquet")
    with pytest.raises(UserError) as refused:
        workdir.check_or_claim_work_dir(paths, CFG, "input", shards, "arch:w@abc")
    assert changed in str(refused.value) and "--rescore" in str(refused.value) and "\n" not in str(refused.value)
    assert paths.work.exists("scored", "00000.parquet")
    workdir.check_or_claim_work_dir(paths, CFG, "input", shards, "arch:w@abc", rescore=True)
    assert not paths.work.exists("scored", "00000.parquet")


def test_a_work_dir_of_the_first_layout_is_refused(small_world, tmp_path):
    paths, shards = _paths(tmp_path), list_shards(str(small_world[0]), "auto")
    old = {"config_digest": CFG.digest(), "inputs": [s.url for s in shards], "attempt": 1}  # before scored_with
    paths.work.write_bytes(json.dumps(old).encode(), "job.json")
    with pytest.raises(UserError, match="schema_version"):
        workdir.check_or_claim_work_dir(paths, CFG, "input", shards, "m")


def test_an_unreadable_job_file_is_one_line(small_world, tmp_path):
    paths, shards = _paths(tmp_path), list_shards(str(small_world[0]), "auto")
    paths.work.write_bytes(b"{not json", "job.json")
    with pytest.raises(UserError, match="delete"):
        workdir.check_or_claim_work_dir(paths, CFG, "input", shards, "m")


@pytest.mark.ray
def test_a_resume_after_the_weights_changed_is_refused_then_rescored(ray_local, small_world, tmp_path):
    """Same config, same path to the weights, other weights inside: the old scores must not be reused."""
    weights = tmp_path / "weights.safetensors"
    shutil.copy(builtin_weights("curation-tiny"), weights)
    overrides = [f"model.pretrained={weights}", "heads=[]", "clip.min_score=null", "model.threads=1"]
    cfg = load_config("pipelines/demo.yaml", overrides)
    out = tmp_path / "out"
    first = run_job(cfg, str(small_world[0]), str(out), log=lambda _: None)
    (out / "_SUCCESS").unlink()  # as if the run had died before its last step

    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, weights)
    with pytest.raises(UserError, match=r"model .*--rescore"):
        run_job(cfg, str(small_world[0]), str(out), log=lambda _: None)

    again = run_job(cfg, str(small_world[0]), str(out), log=lambda _: None, rescore=True)
    funnel = again.manifest["funnel"]
    assert funnel["input"] == funnel["kept"] + funnel["rejected"] == first.manifest["funnel"]["input"]
    assert again.manifest["model_id"] != first.manifest["model_id"]
    assert pads.dataset(str(out / "kept")).count_rows() == funnel["kept"]
