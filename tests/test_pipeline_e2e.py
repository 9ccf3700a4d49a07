"""End to end on a local Ray: synthetic img2dataset shards in, kept/ and rejected/ Parquet out."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import duckdb
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from curation.config import load_config
from curation.io.readers import image_values
from curation.runner import export_output, run_job

pytestmark = pytest.mark.ray

EXPECTED_REASON = {
    "truncated_jpeg": "truncated_image",
    "not_an_image": "not_an_image",
    "tiny": "image_too_small",
    "extreme_aspect": "extreme_aspect_ratio",
}


def curate(input_dir, output_dir, *overrides):
    cfg = load_config("pipelines/demo.yaml", ["model.threads=1", *overrides])
    return run_job(cfg, str(input_dir), str(output_dir), log=lambda _: None)


def rows_of(output: Path, part: str):
    return pads.dataset(str(output / part), format="parquet").to_table()


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.parquet"))}


@pytest.fixture(scope="module")
def first_run(ray_local, small_world, tmp_path_factory):
    input_dir, truth = small_world
    output = tmp_path_factory.mktemp("run") / "out"
    result = curate(input_dir, output)
    return output, truth, result


def test_every_input_row_is_kept_or_rejected(first_run):
    output, truth, result = first_run
    kept, rejected = rows_of(output, "kept"), rows_of(output, "rejected")
    assert kept.num_rows + rejected.num_rows == truth["rows"] == result.manifest["funnel"]["input"]
    assert set(kept.column("status").to_pylist()) == {"kept"}
    assert set(rejected.column("status").to_pylist()) == {"rejected"}
    assert rejected.column("reject_reason").null_count == 0
    assert rejected.column("reject_stage").null_count == 0
    keys = kept.column("key").to_pylist() + rejected.column("key").to_pylist()
    assert sorted(keys) == sorted(truth["labels"])


def test_planted_broken_tiny_and_extreme_rows_get_the_right_reason(first_run):
    output, truth, _ = first_run
    rejected = rows_of(output, "rejected")
    reason_of = dict(zip(rejected.column("key").to_pylist(), rejected.column("reject_reason").to_pylist()))
    checked = 0
    for key, label in truth["labels"].items():
        if label in EXPECTED_REASON:
            assert reason_of.get(key) == EXPECTED_REASON[label], (key, label)
            checked += 1
    assert checked >= 4


def test_each_exact_duplicate_group_keeps_exactly_one(first_run):
    output, truth, _ = first_run
    kept = set(rows_of(output, "kept").column("key").to_pylist())
    rejected = rows_of(output, "rejected").to_pylist()
    dup_of = {r["key"]: r["dup_of"] for r in rejected if r["reject_reason"] == "exact_duplicate"}
    groups = [g for g in truth["duplicate_groups"] if g["kind"] == "exact"]
    assert groups
    for group in groups:
        members = [group["original"], *group["copies"]]
        survivors = [k for k in members if k in kept]
        assert len(survivors) == 1, group
        assert all(dup_of[k] == survivors[0] for k in members if k not in kept)


def test_output_layout_manifest_and_success(first_run):
    output, truth, result = first_run
    assert (output / "_SUCCESS").exists()
    manifest = json.loads((output / "_manifest.json").read_text())
    assert manifest["funnel"] == result.manifest["funnel"]
    assert manifest["model_id"].startswith("curation-tiny:")
    # Totals in the JSON, one row per shard in the Parquet beside it, which its sha256 names.
    entry = manifest["shards_file"]
    shards_file = output / entry["name"]
    assert entry["sha256"] == hashlib.sha256(shards_file.read_bytes()).hexdigest()
    shards = pq.read_table(shards_file).to_pylist()
    assert [s["shard_id"] for s in shards] == sorted(truth["shards"]) and entry["rows"] == len(shards)
    assert manifest["inputs"]["shards"] == len(shards) and "shards" not in manifest
    assert sorted(p.name for p in (output / "kept").iterdir()) == [f"part-{s}.parquet" for s in sorted(truth["shards"])]
    for shard in shards:
        for status in ("kept", "rejected"):
            part = output / status / f"part-{shard['shard_id']}.parquet"
            assert shard[status] == pq.read_metadata(part).num_rows
            assert shard[f"{status}_sha256"] == hashlib.sha256(part.read_bytes()).hexdigest()
        assert sum(json.loads(shard["reasons"]).values()) == shard["rejected"]
        assert shard["url"].endswith(f"{shard['shard_id']}.tar") and shard["format"] == "webdataset"
    funnel = manifest["funnel"]
    (rows, kept, rejected) = (
        duckdb.connect().execute(f"SELECT sum(rows), sum(kept), sum(rejected) FROM '{shards_file}'").fetchone()
    )
    assert (rows, kept, rejected) == (funnel["input"], funnel["kept"], funnel["rejected"])
    keys = rows_of(output, "kept").column("key").to_pylist()
    for path in (output / "kept").glob("*.parquet"):
        part = pq.read_table(path, columns=["key"]).column("key").to_pylist()
        assert part == sorted(part)
    assert len(keys) == len(set(keys))


def test_output_opens_with_pyarrow_dataset_and_duckdb(first_run):
    output, _, result = first_run
    kept = result.manifest["funnel"]["kept"]
    assert pads.dataset(str(output / "kept"), format="parquet").count_rows() == kept
    con = duckdb.connect()
    (count,) = con.execute(f"SELECT count(*) FROM '{output}/kept/*.parquet'").fetchone()
    assert count == kept
    (dim,) = con.execute(f"SELECT max(len(img_emb)) FROM '{output}/kept/*.parquet'").fetchone()
    assert dim == 128


def test_same_job_twice_gives_byte_identical_kept_files(first_run, small_world, tmp_path):
    output, _, _ = first_run
    again = tmp_path / "again"
    curate(small_world[0], again)
    assert file_bytes(again / "kept") == file_bytes(output / "kept")
    assert file_bytes(again / "rejected") == file_bytes(output / "rejected")


def test_rerun_of_a_complete_output_does_nothing(first_run, small_world):
    output, _, _ = first_run
    before = file_bytes(output / "kept")
    result = curate(small_world[0], output)
    assert result.already_complete
    assert file_bytes(output / "kept") == before


def test_interrupted_run_resumes_to_the_same_bytes(first_run, small_world, tmp_path):
    output, truth, _ = first_run
    resumed = tmp_path / "resumed"
    shutil.copytree(output / "_work", resumed / "_work")
    # As if killed in the score phase: one shard's scored file was never committed; nothing written yet.
    (resumed / "_work" / "scored" / f"{sorted(truth['shards'])[1]}.parquet").unlink()
    result = curate(small_world[0], resumed)
    assert result.manifest["resume"] == {"attempt": 2, "shards_scored_in_earlier_attempts": len(truth["shards"]) - 1}
    assert file_bytes(resumed / "kept") == file_bytes(output / "kept")


def test_parquet_input_and_clip_threshold_wiring(ray_local, tmp_path):
    from curation.lab.synth import generate

    truth = generate(str(tmp_path / "in"), rows=120, seed=5, fmt="parquet", shard_size=60)
    curate(tmp_path / "in", tmp_path / "open")
    open_kept = rows_of(tmp_path / "open", "kept")
    assert open_kept.num_rows + rows_of(tmp_path / "open", "rejected").num_rows == truth["rows"]
    threshold = float(sorted(open_kept.column("clip_score").to_pylist())[open_kept.num_rows // 2])

    result = curate(tmp_path / "in", tmp_path / "out", f"clip.min_score={threshold!r}")
    kept, rejected = rows_of(tmp_path / "out", "kept"), rows_of(tmp_path / "out", "rejected")
    assert kept.num_rows + rejected.num_rows == truth["rows"]
    assert min(kept.column("clip_score").to_pylist()) >= threshold
    low = [r for r in rejected.to_pylist() if r["reject_reason"] == "low_clip_score"]
    assert len(low) >= open_kept.num_rows // 3
    assert all(r["clip_score"] < threshold and r["reject_stage"] == "clip" for r in low)
    assert result.manifest["funnel"]["rejected_by_reason"]["low_clip_score"] == len(low)


def hashed_rows(output: Path, part: str) -> list[dict]:
    table = rows_of(output, part)
    rows = [
        {"image": b, "sha256": h, "source": s, "url": u}
        for b, h, s, u in zip(
            image_values(table["image"]).to_pylist(), *(table[c].to_pylist() for c in ("sha256", "source", "url"))
        )
    ]
    return [r for r in rows if r["sha256"] is not None]


def test_output_rows_carry_their_source_bytes(first_run):
    """The score phase lets go of the input's image bytes after decode; the write phase puts back the kept
    rows'. Rejected rows keep none (output.rejected_images: false): they name them."""
    output, _, _ = first_run
    kept, rejected = hashed_rows(output, "kept"), hashed_rows(output, "rejected")
    assert kept and rejected
    assert all(r["image"] is not None and hashlib.sha256(r["image"]).hexdigest() == r["sha256"] for r in kept)
    assert all(r["image"] is None and r["source"] and r["url"] for r in rejected)


def test_rejected_images_true_keeps_the_rejected_bytes_and_the_same_kept_files(first_run, small_world, tmp_path):
    output, _, _ = first_run
    curate(small_world[0], tmp_path / "with", "output.rejected_images=true")
    rejected = hashed_rows(tmp_path / "with", "rejected")
    assert len(rejected) == len(hashed_rows(output, "rejected"))
    assert all(r["image"] is not None and hashlib.sha256(r["image"]).hexdigest() == r["sha256"] for r in rejected)
    assert file_bytes(tmp_path / "with" / "kept") == file_bytes(output / "kept")
    # curate export --rejected-images brings back, from the input, exactly the rejected/ that run wrote
    export_output(str(output), "rejected_images", to_url=str(tmp_path / "back"), log=lambda _: None)
    assert file_bytes(tmp_path / "back") == file_bytes(tmp_path / "with" / "rejected")


def test_an_input_changed_between_score_and_write_stops_the_job_with_one_line(ray_local, tmp_path, monkeypatch):
    import pyarrow as pa

    import curation.runner as runner
    from curation.errors import UserError
    from curation.lab.synth import generate

    generate(str(tmp_path / "in"), rows=40, seed=3, fmt="parquet", shard_size=20)
    shard = sorted((tmp_path / "in").glob("*.parquet"))[1]
    dedup = runner.run_dedup

    def change_input_then_dedup(*args, **kwargs):
        table = pq.read_table(shard)
        column = table.schema.get_field_index("jpg")
        images = table.column(column).to_pylist()
        images[0] = images[1]  # another picture under the first row's key
        pq.write_table(table.set_column(column, "jpg", pa.array(images, pa.binary())), shard)
        return dedup(*args, **kwargs)

    monkeypatch.setattr(runner, "run_dedup", change_input_then_dedup)
    with pytest.raises(
        UserError, match=rf"input shard .*{shard.name} changed since it was scored.*delete .*_work"
    ) as raised:
        curate(tmp_path / "in", tmp_path / "out")
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_weights_an_actor_cannot_load_are_a_one_line_user_error(ray_local, tmp_path):
    from curation.errors import UserError
    from curation.lab.synth import generate

    generate(str(tmp_path / "in"), rows=20, seed=4, fmt="parquet", shard_size=20)
    with pytest.raises(UserError, match=r"model\.pretrained file .*missing\.safetensors not found") as raised:
        curate(tmp_path / "in", tmp_path / "out", f"model.pretrained={tmp_path / 'missing.safetensors'}")
    assert "\n" not in str(raised.value)
