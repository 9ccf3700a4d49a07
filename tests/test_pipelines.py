"""The shipped pipeline configs load, and laion_style behaves as LAION did: tag, don't remove, unsafe."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as pads
import pytest

from curation.config import load_config
from curation.io.readers import image_values
from curation.runner import run_job

PIPELINES = sorted((Path(__file__).resolve().parent.parent / "pipelines").glob("*.yaml"))


def test_there_are_the_documented_pipelines():
    assert {p.stem for p in PIPELINES} >= {"demo", "laion_style", "datacomp_style", "refresh"}


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_every_pipeline_validates(path):
    cfg = load_config(path)
    assert cfg.digest()


def test_laion_style_settings():
    cfg = load_config(PIPELINES[0].parent / "laion_style.yaml")
    assert cfg.clip.min_score == 0.28 and cfg.model.arch == "ViT-B-32"
    assert cfg.basic.min_caption_chars == 5 and cfg.basic.min_image_bytes == 5000
    assert {h.score_column: h.threshold for h in cfg.heads} == {"unsafe": None, "watermark": None, "aesthetic": None}
    assert cfg.heads[2].weights.endswith("laion-aesthetic-vit-b-32.safetensors")  # curate convert-head's output
    assert cfg.language.keep == ()  # LAION-5B: multilingual, languages labelled only


def test_datacomp_style_blurs_faces_and_keeps_english():
    cfg = load_config(PIPELINES[0].parent / "datacomp_style.yaml")
    assert cfg.privacy.faces == "blur" and cfg.language.keep == ("en",)


@pytest.mark.ray
def test_laion_style_tags_unsafe_and_watermark_instead_of_rejecting(ray_local, small_world, tmp_path):
    overrides = [  # the shipped tiny CLIP instead of ViT-B-32 weights, which this machine does not have
        "model.arch=curation-tiny",
        "model.pretrained=builtin",
        "model.num_gpus=0",
        "model.precision=auto",
        "model.batch_size=256",
        "model.threads=1",
        "clip.min_score=0.35",
        "basic.min_image_bytes=6000",
        "output.rejected_images=true",  # the rejected images' sizes are checked below
    ]
    cfg = load_config(PIPELINES[0].parent / "laion_style.yaml", overrides)
    cfg = cfg.model_copy(update={"heads": cfg.heads[:2]})  # LAION's aesthetic head reads ViT-B-32 embeddings
    run_job(cfg, str(small_world[0]), str(tmp_path / "out"), log=lambda _: None)
    columns = ["key", "image", "unsafe", "watermark", "lang", "status", "reject_reason"]
    kept, rejected = (
        [
            {**row, "image": image}
            for row, image in zip(table.to_pylist(), image_values(table.column("image")).to_pylist())
        ]
        for table in (pads.dataset(str(tmp_path / "out" / p)).to_table(columns=columns) for p in ("kept", "rejected"))
    )
    assert len(kept) + len(rejected) == small_world[1]["rows"]
    reasons = {r["reject_reason"] for r in rejected}
    assert not reasons & {"unsafe", "watermark"}  # tagged only
    assert all(r["unsafe"] is not None and r["watermark"] is not None for r in kept)
    labels = small_world[1]["labels"]
    assert any(labels[r["key"]] == "unsafe" for r in kept)  # planted unsafe rows stay, with their score
    # Planted non-English captions are labelled, not removed for their language (the tiny CLIP, which
    # knows English only, may still reject them for their clip_score).
    foreign = [r for r in kept + rejected if labels[r["key"]] == "non_english"]
    assert foreign and all(r["lang"] not in (None, "en") for r in foreign)
    assert "unwanted_language" not in reasons
    small = [r for r in rejected if r["reject_reason"] == "image_too_few_bytes"]
    assert small and all(len(r["image"]) < 6000 for r in small)
    assert all(len(r["image"]) >= 6000 for r in kept)
