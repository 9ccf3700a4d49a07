"""`curate dedup OUTPUT` and `curate write OUTPUT`: the phases after scoring, again, from the committed
scored shards, give the bytes a full run with the same settings gives; settings that change scoring are
refused with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from curation.cli import main
from curation.config import load_config
from curation.errors import UserError
from curation.runner import redo_phases, run_job

pytestmark = pytest.mark.ray


def curate(input_dir, output_dir, *overrides):
    cfg = load_config("pipelines/demo.yaml", ["model.threads=1", *overrides])
    return run_job(cfg, str(input_dir), str(output_dir), log=lambda _: None)


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.parquet"))}


def _outputs(output: Path) -> dict[str, bytes]:
    return {f"{part}/{name}": data for part in ("kept", "rejected") for name, data in file_bytes(output / part).items()}


def _scored_times(output: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (output / "_work" / "scored").glob("*.parquet")}


@pytest.fixture(scope="module")
def scored_run(ray_local, small_world, tmp_path_factory):
    input_dir, _ = small_world
    output = tmp_path_factory.mktemp("redo") / "out"
    first = curate(input_dir, output)
    return input_dir, output, first.manifest


def test_dedup_with_another_eps_gives_the_bytes_of_a_full_run_without_rescoring(scored_run, tmp_path):
    input_dir, output, first = scored_run
    scored, first_bytes = _scored_times(output), _outputs(output)
    looser = ("dedup.semantic_eps=0.3", "dedup.semantic_text_eps=0.3")
    result = redo_phases(str(output), looser, "dedup", log=lambda _: None)
    assert _scored_times(output) == scored  # nothing scored again
    semantic = "semantic_duplicate"
    assert result.manifest["funnel"]["rejected_by_reason"].get(semantic, 0) > first["funnel"]["rejected_by_reason"].get(
        semantic, 0
    )
    full = curate(input_dir, tmp_path / "full", *looser)
    assert _outputs(output) == _outputs(tmp_path / "full")
    assert result.manifest["funnel"] == full.manifest["funnel"]
    assert result.manifest["config_digest"] == full.manifest["config_digest"]
    # The output is now that config's: a run with it has nothing to do.
    assert curate(input_dir, output, *looser).already_complete
    # And back, by the command line: the first run's bytes again.
    cli = CliRunner().invoke(
        main, ["dedup", str(output), "--set", "dedup.semantic_eps=0.12", "--set", "dedup.semantic_text_eps=0.05"]
    )
    assert cli.exit_code == 0, cli.output
    assert "kept" in cli.output
    assert _outputs(output) == first_bytes
    shutil.rmtree(tmp_path / "full")


def test_write_again_gives_the_same_bytes_and_dedup_settings_need_dedup(scored_run):
    _, output, _ = scored_run
    before = _outputs(output)
    (output / "kept" / sorted(p.name for p in (output / "kept").glob("*.parquet"))[0]).unlink()
    redo_phases(str(output), (), "write", log=lambda _: None)
    assert _outputs(output) == before
    with pytest.raises(UserError) as refused:
        redo_phases(str(output), ("dedup.semantic_eps=0.3",), "write", log=lambda _: None)
    assert "dedup.semantic_eps" in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "setting, named",
    [("basic.min_caption_words=5", "basic.min_caption_words"), ("model.batch_size=7", "model.batch_size")],
)
def test_a_setting_that_changes_scoring_is_refused_with_one_line(scored_run, setting, named):
    _, output, _ = scored_run
    manifest = json.loads((output / "_manifest.json").read_text())
    with pytest.raises(UserError) as refused:
        redo_phases(str(output), (setting,), "dedup", log=lambda _: None)
    message = str(refused.value)
    assert named in message and "curate run" in message and "\n" not in message
    assert json.loads((output / "_manifest.json").read_text()) == manifest  # nothing touched
    assert (output / "_SUCCESS").exists()


def test_an_output_without_a_work_dir_is_one_line(tmp_path):
    with pytest.raises(UserError, match="curate run"):
        redo_phases(str(tmp_path / "nothing"), (), "dedup", log=lambda _: None)
