"""The `hf_datasets` input format (one module under curation/io/formats/): a dataset written by Hugging Face
`datasets` itself, saved to disk (Arrow files) or in the hub's Parquet layout, read as shards."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

from curation.config import load_config
from curation.errors import UserError
from curation.io.readers import read_shard
from curation.io.sources import list_shards

datasets = pytest.importorskip("datasets")

CAPTIONS = ["a red square on grey", "a blue circle in the middle", None, "a green triangle at the top"]


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def _dataset(rows: int = 12):
    images = [{"bytes": _jpeg(i), "path": None} for i in range(rows)]
    images[5] = None  # a row without its image
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    return datasets.Dataset.from_dict(
        {"image": images, "text": [CAPTIONS[i % len(CAPTIONS)] for i in range(rows)]}, features=features
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    _dataset().save_to_disk(str(root / "saved"), num_shards=3)
    (root / "saved" / "cache-0123abcd.arrow").write_bytes(b"not data")  # what .map() leaves beside them
    return root / "saved"


def test_a_saved_dataset_is_one_shard_per_data_file(saved):
    shards = list_shards(str(saved))
    assert [s.format for s in shards] == ["hf_datasets"] * 3
    assert [s.shard_id for s in shards] == [f"data-0000{i}-of-00003" for i in range(3)]
    state = json.loads((saved / "state.json").read_text())
    assert sorted(s.url.rsplit("/", 1)[1] for s in shards) == sorted(f["filename"] for f in state["_data_files"])


def test_every_row_comes_out_once_with_its_image_bytes_and_caption(saved):
    tables = [read_shard(s) for s in list_shards(str(saved))]
    rows = [row for table in tables for row in table.to_pylist()]
    assert len(rows) == 12 and len({r["key"] for r in rows}) == 12
    originals = _dataset()
    expected = {_jpeg(i) for i in range(12) if i != 5}
    assert {r["image"] for r in rows if r["image"] is not None} == expected
    reasons = sorted(r["reject_reason"] for r in rows if r["status"] == "rejected")
    missing_captions = sum(1 for i in range(12) if originals[i]["text"] is None)
    assert reasons == sorted(["missing_image"] + ["missing_caption"] * missing_captions)


def test_images_are_read_back_at_the_positions_the_reader_recorded(saved):
    from curation.io.readers import read_images_at

    for shard in list_shards(str(saved)):
        table = read_shard(shard)
        with_bytes = table.filter(table.column("image").is_valid())
        at = with_bytes.column("_image_at").to_pylist()[::-1]
        found = read_images_at(shard, at)
        assert found.to_pylist() == with_bytes.column("image").to_pylist()[::-1]
        assert with_bytes.column("_image_size").to_pylist() == [len(b) for b in with_bytes.column("image").to_pylist()]


def test_the_hub_parquet_layout_is_read_by_the_parquet_format(tmp_path):
    _dataset().to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    (shard,) = list_shards(str(tmp_path))
    assert shard.format == "parquet"
    table = read_shard(shard)
    assert table.num_rows == 12 and table.column("image").null_count == 1
    assert set(table.column("caption").to_pylist()) - {None} == set(CAPTIONS) - {None}


def test_the_format_is_named_in_the_config_and_an_unknown_one_is_one_line():
    assert load_config(None, ["input.format=hf_datasets"]).input.format == "hf_datasets"
    with pytest.raises(UserError, match="unknown input format 'lance'.*hf_datasets"):
        load_config(None, ["input.format=lance"])


@pytest.mark.ray
def test_a_job_curates_a_saved_dataset(ray_local, saved, tmp_path):
    from curation.runner import run_job

    cfg = load_config("pipelines/demo.yaml", ["heads=[]", "clip.min_score=null", "model.threads=1"])
    result = run_job(cfg, str(saved), str(tmp_path / "out"), log=lambda _: None)
    funnel = result.manifest["funnel"]
    assert funnel["input"] == 12 == funnel["kept"] + funnel["rejected"]
    kept = pads.dataset(str(tmp_path / "out" / "kept")).to_table(columns=["image"]).column("image").to_pylist()
    assert kept and {k["bytes"] for k in kept} <= {_jpeg(i) for i in range(12)}  # the write phase read them again
