"""Pairs that copy (or resize) an image of an eval set are rejected as eval_contamination."""

from __future__ import annotations

import io
import tarfile

import pyarrow.dataset as pads
import pytest
from PIL import Image

from curation.config import load_config
from curation.runner import run_job

pytestmark = pytest.mark.ray


def test_eval_images_and_their_resized_copies_are_caught(ray_local, small_world, tmp_path):
    input_dir, truth = small_world
    in_groups = {k for g in truth["duplicate_groups"] for k in [g["original"], *g["copies"]]}
    chosen = [k for k, label in sorted(truth["labels"].items()) if label == "clean" and k not in in_groups][:4]
    images = {}
    with tarfile.open(input_dir / f"{chosen[0].split('/')[0]}.tar") as tar:
        for member in tar.getmembers():
            key = f"{chosen[0].split('/')[0]}/{member.name.split('.')[0]}"
            if key in chosen and member.name.endswith(".jpg"):
                images[key] = tar.extractfile(member).read()
    assert len(images) == 4
    eval_dir = tmp_path / "benchmark"
    eval_dir.mkdir()
    for i, (key, data) in enumerate(sorted(images.items())):
        if i % 2:  # a resized, recompressed copy
            image = Image.open(io.BytesIO(data))
            image = image.resize((image.width * 4 // 5, image.height * 4 // 5))
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=70)
            data = buf.getvalue()
        (eval_dir / f"img{i}.jpg").write_bytes(data)

    cfg = load_config("pipelines/demo.yaml", ["model.threads=1", f"dedup.eval_sets=['{eval_dir}']"])
    run_job(cfg, str(input_dir), str(tmp_path / "out"), log=lambda _: None)
    rejected = pads.dataset(str(tmp_path / "out" / "rejected")).to_table().to_pylist()
    contaminated = {r["key"]: r for r in rejected if r["reject_reason"] == "eval_contamination"}
    assert set(chosen) <= set(contaminated)
    assert set(contaminated) == set(chosen)  # nothing else in the world looks like these eval images
    assert all(r["dup_of"].startswith("eval:benchmark/img") and r["dup_kind"] == "eval" for r in contaminated.values())
