"""The project's own tower: open_clip's ViT with a convolutional stem, saved and reloaded bit for bit."""

from __future__ import annotations

import pytest
import torch

from curation.models.clip import save_open_clip_dir
from curation.models.towers import CONV_STEMS, ConvStem, StemSpec, create_model, load_model_dir


def test_the_stem_gives_the_patch_grid_the_transformer_expects():
    torch.manual_seed(0)
    model = create_model("curation-tiny").eval()
    stem = model.visual.conv1
    assert isinstance(stem, ConvStem) and stem.out_channels == model.visual.transformer.width
    images = torch.randn(3, 3, 64, 64)
    assert stem(images).shape == (3, 128, 8, 8)  # 64 px / patch 8, as the plain ViT's projection
    assert model.encode_image(images).shape == (3, 128)


def test_a_saved_folder_reloads_identically_with_its_stem(tmp_path):
    torch.manual_seed(1)
    model = create_model("curation-tiny")
    model.train()
    model.encode_image(torch.randn(8, 3, 64, 64))  # moves the batch-norm statistics off their defaults
    model.eval()
    save_open_clip_dir(model, "curation-tiny", tmp_path / "m", fp16=False)
    loaded, tokenizer = load_model_dir(tmp_path / "m")
    assert not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    images = torch.randn(2, 3, 64, 64)
    assert torch.equal(model.encode_image(images), loaded.encode_image(images))
    assert tokenizer(["a red star"]).shape[1] == 40


def test_strides_must_keep_the_patch_grid(monkeypatch):
    monkeypatch.setitem(CONV_STEMS, "curation-tiny", StemSpec(channels=(16, 32), strides=(2, 2)))
    with pytest.raises(ValueError, match="multiply to the patch size 8"):
        create_model("curation-tiny")


def test_a_plain_vit_checkpoint_does_not_load_into_the_stem_tower(tmp_path):
    import open_clip

    plain = open_clip.create_model("curation-tiny")  # open_clip's own ViT: a single patch projection
    path = save_open_clip_dir(plain, "curation-tiny", tmp_path / "plain", fp16=False)
    with pytest.raises(RuntimeError, match="conv1"):
        create_model("curation-tiny", pretrained=str(path))
