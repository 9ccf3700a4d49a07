"""Classifier heads: scores from the embedding pass, thresholds and reasons from HeadsFilter."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.config import Config, HeadConfig, ModelConfig, load_config
from curation.errors import UserError
from curation.lab.synth.effects import draw_unsafe_motif, overlay_watermark
from curation.lab.synth.world import encode_jpeg, sample_scene, sample_size
from curation.models.clip import model_info
from curation.stages.decode import decode_image
from curation.stages.embed import EmbedStage
from curation.stages.heads import HeadsFilter


def scored(rows):
    n = len(rows)
    return pa.table(
        {
            "key": [f"s/{i}" for i in range(n)],
            "unsafe": pa.array([r[0] for r in rows], pa.float32()),
            "watermark": pa.array([r[1] for r in rows], pa.float32()),
            "aesthetic": pa.array([r[2] for r in rows], pa.float32()),
            "status": [r[3] for r in rows],
            "reject_reason": [None if r[3] == "kept" else "tiny" for r in rows],
            "reject_stage": [None if r[3] == "kept" else "basic" for r in rows],
        }
    )


def test_heads_filter_rejects_with_each_heads_reason():
    heads = Config().heads
    table = scored(
        [
            (0.1, 0.1, 0.9, "kept"),  # clean
            (0.9, 0.1, 0.9, "kept"),  # unsafe
            (0.1, 0.8, 0.9, "kept"),  # watermark
            (0.1, 0.1, 0.2, "kept"),  # low aesthetic: rejected below its threshold
            (0.9, 0.9, 0.1, "kept"),  # all three: the first head in the config names it
            (0.9, 0.1, 0.9, "rejected"),  # already rejected: keeps its reason
            (None, None, None, "kept"),  # not scored: nothing to judge
        ]
    )
    out = HeadsFilter.from_config(heads).process_batch(table)
    assert out.column("reject_reason").to_pylist() == [
        None,
        "unsafe",
        "watermark",
        "low_aesthetic",
        "unsafe",
        "tiny",
        None,
    ]
    assert out.column("reject_stage").to_pylist() == [None, "heads", "heads", "heads", "heads", "basic", None]
    assert out.column("status").to_pylist() == [
        "kept",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
        "kept",
    ]


def test_a_head_without_threshold_only_scores():
    heads = (HeadConfig(name="unsafe", weights="builtin"),)
    out = HeadsFilter.from_config(heads).process_batch(scored([(0.99, 0.0, 1.0, "kept")]))
    assert out.column("status").to_pylist() == ["kept"]


def test_head_config_is_checked():
    with pytest.raises(UserError, match="exactly one of weights"):
        load_config(None, ["heads=[{name: unsafe, weights: builtin, prompts: [nsfw]}]"])
    with pytest.raises(UserError, match="is a record column already"):
        load_config(None, ["heads=[{name: caption, prompts: [a logo]}]"])
    with pytest.raises(UserError, match="must be an identifier"):
        load_config(None, ["heads=[{name: Logo-Detector, prompts: [a logo]}]"])
    with pytest.raises(UserError, match="between 0 and 1"):
        load_config(None, ["heads=[{name: logo, prompts: [a logo], threshold: 5}]"])
    logo = load_config(None, ["heads=[{name: logo, prompts: [a logo], threshold: 0.7}]"]).heads[0]
    assert (logo.score_column, logo.reject_reason) == ("logo", "logo")  # any name: its column, its reason
    with pytest.raises(UserError, match="same column"):
        load_config(None, ["heads=[{name: unsafe, prompts: [nsfw]}, {name: nsfw, column: unsafe, prompts: [x]}]"])
    cfg = load_config(None, ["heads=[{name: logo, column: watermark, prompts: [a logo], threshold: 0.7}]"])
    assert cfg.heads[0].reject_reason == "watermark"


def images(kind: str, n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = sample_scene(rng).render(*sample_size(rng))
        if kind == "unsafe":
            image = draw_unsafe_motif(image, rng)
        elif kind == "watermark":
            image = overlay_watermark(image, rng)
        out.append(decode_image(encode_jpeg(image), size=64, max_pixels=10**8).pixels)
    return out


def pixel_batch(pixels: list[bytes]) -> pa.Table:
    n = len(pixels)
    return pa.table(
        {
            "key": [f"s/{i}" for i in range(n)],
            "caption": ["a photo of shapes on a background"] * n,
            "pixels": pa.array(pixels, pa.binary()),
            "status": ["kept"] * n,
        }
    )


def embed_stage(heads) -> EmbedStage:
    cfg = ModelConfig(threads=1)
    info = model_info(cfg)
    return EmbedStage(model=cfg, image_size=info.image_size, embed_dim=info.embed_dim, heads=heads)


@pytest.fixture(scope="module")
def worlds():
    return {kind: images(kind, 24, seed) for seed, kind in enumerate(("clean", "unsafe", "watermark"))}


def test_builtin_heads_score_in_the_embedding_pass(worlds):
    stage = embed_stage(Config().heads)
    out = stage.process_batch(pixel_batch(worlds["clean"] + worlds["unsafe"] + worlds["watermark"]))
    assert "pixels" not in out.column_names
    unsafe = np.array(out.column("unsafe").to_pylist())
    watermark = np.array(out.column("watermark").to_pylist())
    aesthetic = np.array(out.column("aesthetic").to_pylist())
    assert out.schema.field("unsafe").type == pa.float32()
    assert ((0 <= unsafe) & (unsafe <= 1)).all()
    assert (unsafe[24:48] > 0.5).mean() >= 0.9 and (unsafe[:24] < 0.5).mean() >= 0.9
    assert (watermark[48:] > 0.5).mean() >= 0.9 and (watermark[:24] < 0.5).mean() >= 0.9
    assert (aesthetic[:24] > 0.5).mean() >= 0.9


def test_zero_shot_head_from_prompts_needs_no_training(worlds):
    head = HeadConfig(
        name="unsafe",
        prompts=("nsfw", "explicit image", "a magenta hazard target"),
        negative_prompts=("a photo of shapes on a background",),
        threshold=0.5,
    )
    stage = embed_stage((head,))
    out = stage.process_batch(pixel_batch(worlds["clean"] + worlds["unsafe"]))
    scores = np.array(out.column("unsafe").to_pylist())
    assert scores[24:].mean() > scores[:24].mean() + 0.2
    assert "watermark" not in out.column_names


def test_builtin_heads_need_the_builtin_model():
    cfg = ModelConfig(pretrained=None, threads=1)
    info = model_info(cfg)
    stage = EmbedStage(model=cfg, image_size=info.image_size, embed_dim=info.embed_dim, heads=Config().heads)
    with pytest.raises(UserError, match="builtin head weights ship with model.pretrained builtin"):
        stage.setup()
