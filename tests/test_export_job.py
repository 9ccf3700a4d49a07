"""The exports of a real job on a local Ray (docs/export.md): open_clip's own trainer trains on the
webdataset tars, `curate run` reads them back as img2dataset input, `curate export` (Ray tasks) writes
the same bytes locally and to S3, and Hugging Face datasets loads kept/ with PIL images."""

from __future__ import annotations

import glob
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from curation.config import load_config
from curation.runner import export_output, run_job

pytestmark = pytest.mark.ray

SETTINGS = [
    "model.threads=1",
    "output.formats=[parquet, webdataset]",
    "output.embeddings=npy",
    "output.shard_rows=64",
]
TINY_CLIP = {  # a random-init open_clip config small enough to train a few steps on CPU in seconds
    "model_cfg": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
    "preprocess_cfg": {},
}


@pytest.fixture(scope="module")
def job(ray_local, small_world, tmp_path_factory):
    output = tmp_path_factory.mktemp("export-job") / "out"
    lines: list[str] = []
    result = run_job(load_config("pipelines/demo.yaml", SETTINGS), str(small_world[0]), str(output), log=lines.append)
    return output, result.manifest, lines


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_job_prints_the_brace_pattern_and_the_sample_count(job):
    output, manifest, lines = job
    kept = manifest["funnel"]["kept"]
    webdataset = next(e for e in manifest["exports"] if e["format"] == "webdataset")
    shards = math.ceil(kept / 64)
    pattern = f"{output}/webdataset/{{00000..{shards - 1:05d}}}.tar"
    assert webdataset["pattern"] == pattern and webdataset["samples"] == kept and webdataset["shards"] == shards
    line = next(line for line in lines if line.startswith("webdataset:"))
    assert pattern in line and f"--train-num-samples {kept}" in line
    assert sorted(p.name for p in (output / "webdataset").glob("*.tar")) == [f"{i:05d}.tar" for i in range(shards)]
    embeddings = next(e for e in manifest["exports"] if e["format"] == "embeddings")
    assert embeddings["rows"] == kept and embeddings["vectors"] == ["img_emb", "text_emb"]
    assert any(line.startswith("embeddings:") for line in lines)


def test_open_clip_trains_on_the_export(job, tmp_path):
    output, manifest, _ = job
    pattern = next(e for e in manifest["exports"] if e["format"] == "webdataset")["pattern"]
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "open_clip_config.json").write_text(json.dumps(TINY_CLIP))
    command = [
        sys.executable, "-m", "open_clip_train.main",
        "--dataset-type", "webdataset", "--train-data", pattern, "--train-num-samples", "32",
        "--model", f"local-dir:{tmp_path / 'model'}", "--batch-size", "8", "--epochs", "1", "--workers", "0",
        "--device", "cpu", "--lr", "1e-4", "--warmup", "1", "--log-every-n-steps", "1", "--seed", "0",
        "--save-frequency", "0", "--report-to", "", "--logs", str(tmp_path / "logs"), "--name", "export",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    log = (tmp_path / "logs" / "export" / "out.log").read_text()
    assert done.returncode == 0, done.stderr[-3000:]
    losses = [float(v) for v in re.findall(r"Train Epoch: 0 .* Loss: ([-\d.naif]+) \(", log)]
    assert len(losses) >= 2 and all(math.isfinite(v) for v in losses), log[-2000:]


def test_webdataset_iterates_exactly_the_kept_rows(job):
    import webdataset as wds

    output, manifest, _ = job
    pattern = next(e for e in manifest["exports"] if e["format"] == "webdataset")["pattern"]
    samples = list(wds.WebDataset(pattern, shardshuffle=False))
    kept = pq.read_table(output / "kept", columns=["key", "caption"])
    assert [json.loads(s["json"])["curation_key"] for s in samples] == kept.column("key").to_pylist()
    assert [s["txt"].decode() for s in samples] == kept.column("caption").to_pylist()


def test_curate_run_reads_the_export_back_as_img2dataset_input(job, tmp_path):
    output, manifest, _ = job
    again = run_job(
        load_config("pipelines/demo.yaml", ["model.threads=1"]),
        str(output / "webdataset"),
        str(tmp_path / "again"),
        log=lambda _: None,
    ).manifest
    funnel = again["funnel"]
    assert funnel["input"] == manifest["funnel"]["kept"] == funnel["kept"] + funnel["rejected"]
    assert funnel["kept"] > 0.8 * funnel["input"]  # curated once already: little left to reject


def test_export_command_writes_the_same_bytes_as_the_job(job, tmp_path):
    output, _, _ = job
    for fmt in ("webdataset", "embeddings"):
        summary = export_output(str(output), fmt, to_url=str(tmp_path / fmt), log=lambda _: None)
        ours, jobs = files(tmp_path / fmt), files(output / fmt)
        assert ours.pop("_export.json") and jobs.pop("_export.json")
        assert ours == jobs and summary["format"] == fmt


def test_export_command_writes_to_s3(job, s3_bucket):
    output, _, _ = job
    fs = fsspec.filesystem("s3")
    for fmt in ("webdataset", "embeddings"):
        url = f"s3://{s3_bucket}/{fmt}"
        summary = export_output(str(output), fmt, to_url=url, log=lambda _: None)
        fs.invalidate_cache()
        stored = {p.split(f"/{fmt}/", 1)[1]: fs.cat_file(p) for p in fs.find(f"{s3_bucket}/{fmt}")}
        local = files(output / fmt)
        assert {k: v for k, v in stored.items() if k != "_export.json"} == {
            k: v for k, v in local.items() if k != "_export.json"
        }
        assert summary["url"] == url and json.loads(stored["_export.json"])["url"] == url


def test_datasets_loads_kept_with_pil_images(job, tmp_path):
    import datasets
    from PIL import Image

    output, manifest, _ = job
    data_files = sorted(glob.glob(str(output / "kept" / "*.parquet")))
    ds = datasets.load_dataset("parquet", data_files=data_files, split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == manifest["funnel"]["kept"]
    assert isinstance(ds[0]["image"], Image.Image) and ds[0]["image"].size == (ds[0]["width"], ds[0]["height"])
    assert ds.with_format("numpy")[:4]["img_emb"].shape[0] == 4


def test_rejected_rows_name_their_bytes_and_the_export_reads_them_back_from_the_input(job, small_world, tmp_path):
    import hashlib
    import shutil

    from click.testing import CliRunner

    from curation.cli import main
    from curation.errors import UserError
    from curation.io.readers import image_values, read_shard
    from curation.io.sources import list_shards

    output, manifest, _ = job
    rejected = pq.read_table(output / "rejected")
    assert rejected.num_rows == manifest["funnel"]["rejected"] > 0
    assert rejected.column("image").null_count == rejected.num_rows  # output.rejected_images: false
    from curation.io.commit import Location
    from curation.manifest import read_shards

    shard_rows = read_shards(Location.of(str(output)), manifest, columns=["shard_id", "url"]).to_pylist()
    inputs = {r["shard_id"]: r["url"] for r in shard_rows}
    assert set(rejected.column("source").to_pylist()) <= set(inputs)  # the source shard, by the manifest
    named = rejected.filter(rejected.column("sha256").is_valid())
    assert named.num_rows > 0.8 * rejected.num_rows and named.column("url").null_count == 0

    result = CliRunner().invoke(main, ["export", str(output), "--rejected-images", "--to", str(tmp_path / "rej")])
    assert result.exit_code == 0, result.output
    assert f"{named.num_rows} images read back from the input" in result.output
    back = pq.read_table(tmp_path / "rej")
    assert back.drop_columns(["image"]).equals(rejected.drop_columns(["image"]))  # the same rows, in order
    assert (
        pq.read_schema(tmp_path / "rej" / "part-00000.parquet").metadata
        == pq.read_schema(output / "rejected" / "part-00000.parquet").metadata
    )  # Hugging Face's features too
    source = {}
    for shard in list_shards(str(small_world[0])):
        raw = read_shard(shard)
        source.update(zip(raw.column("key").to_pylist(), raw.column("image").to_pylist()))
    images = image_values(back.column("image")).to_pylist()
    for key, digest, data in zip(back.column("key").to_pylist(), back.column("sha256").to_pylist(), images):
        assert (data is None) == (digest is None), key
        if data is not None:  # exactly the input's bytes
            assert hashlib.sha256(data).hexdigest() == digest and data == source[key]

    moved = tmp_path / "moved"  # the input elsewhere, one rejected image's bytes changed in place
    shutil.copytree(small_world[0], moved)
    key = named.column("key")[0].as_py()
    shard = next(s for s in list_shards(str(moved)) if s.shard_id == named.column("source")[0].as_py())
    raw = read_shard(shard)
    at = raw.column("_image_at").to_pylist()[raw.column("key").to_pylist().index(key)]
    with open(shard.url, "r+b") as f:
        f.seek(at + 100)
        f.write(b"\x00" * 8)
    with pytest.raises(UserError, match=rf"no longer holds the image of {re.escape(key)}.*--input") as raised:
        export_output(str(output), "rejected_images", to_url=str(tmp_path / "again"), input_url=str(moved), log=print)
    assert "\n" not in str(raised.value)
