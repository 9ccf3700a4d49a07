"""A shortened `curate train-clip` run writes a folder that open_clip and the pipeline reload offline."""

from __future__ import annotations

import json

import open_clip
import pytest
from click.testing import CliRunner

from curation.cli import main
from curation.config import HeadConfig, ModelConfig
from curation.models.clip import load_clip
from curation.models.heads import load_head

pytestmark = pytest.mark.slow


def test_short_train_clip_run_gives_a_loadable_folder(tmp_path):
    out = tmp_path / "tiny"
    result = CliRunner().invoke(
        main,
        ["train-clip", "--output", str(out), "--images", "300", "--steps", "2", "--batch-size", "32",
         "--head-images", "200", "--eval-pairs", "100", "--seed", "5"],
    )
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"open_clip_config.json", "open_clip_model.safetensors", "MODEL_CARD.md", "metrics.json", "heads"} <= names
    model = open_clip.create_model(f"local-dir:{out}")
    assert model.visual.image_size == (64, 64)
    clip = load_clip(ModelConfig(pretrained=str(out), threads=1))
    assert clip.info.embed_dim == 128
    for name in ("unsafe", "watermark", "aesthetic"):
        assert load_head(out / "heads" / f"{name}.safetensors").features == ("embedding", "tokens", "stem")
    card = (out / "MODEL_CARD.md").read_text()
    assert "R@1" in card and "--steps 2" in card and "seed 5" in card
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert 0.0 <= metrics["retrieval_r1_100"] <= 1.0
    # a head trained here plugs into the pipeline by path
    HeadConfig(name="unsafe", weights=str(out / "heads" / "unsafe.safetensors"), threshold=0.5)
