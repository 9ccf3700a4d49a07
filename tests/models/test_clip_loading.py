"""Loading CLIP weights: the shipped builtin model, a local safetensors file of a standard arch, tags offline."""

from __future__ import annotations

import time

import open_clip
import pytest
import torch

from curation.config import ModelConfig
from curation.errors import UserError
from curation.models.clip import builtin_dir, load_clip, model_info, save_open_clip_dir
from curation.models.towers import load_model_dir

BUILTIN_MAX_BYTES = 20_000_000


def test_builtin_model_is_the_default_and_small():
    cfg = ModelConfig(threads=1)
    assert cfg.pretrained == "builtin"
    info = model_info(cfg)
    assert info.model_id.startswith("curation-tiny:builtin@")
    weights = builtin_dir("curation-tiny") / "open_clip_model.safetensors"
    assert weights.stat().st_size <= BUILTIN_MAX_BYTES
    assert (builtin_dir("curation-tiny") / "MODEL_CARD.md").is_file()
    # the shipped folder reloads offline by itself (its metadata names the architecture)
    model, _ = load_model_dir(builtin_dir("curation-tiny"))
    loaded = load_clip(cfg).model
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_builtin_for_an_arch_without_shipped_weights_names_the_fix():
    with pytest.raises(UserError, match="ships no weights for ViT-S-32-alt"):
        model_info(ModelConfig(arch="ViT-S-32-alt", pretrained="builtin"))


def test_random_init_is_still_available():
    cfg = ModelConfig(pretrained=None, threads=1)
    assert model_info(cfg).model_id == "curation-tiny:random-init(seed=0)"
    a, b = load_clip(cfg).model, load_clip(cfg).model
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_local_safetensors_checkpoint_of_a_standard_arch(tmp_path):
    torch.manual_seed(3)
    model = open_clip.create_model("ViT-S-32-alt")
    path = save_open_clip_dir(model, "ViT-S-32-alt", tmp_path / "vit-s", fp16=False)
    assert path.suffix == ".safetensors"
    clip = load_clip(ModelConfig(arch="ViT-S-32-alt", pretrained=str(path), threads=1))
    for (name, a), (_, b) in zip(model.state_dict().items(), clip.model.state_dict().items()):
        assert torch.equal(a, b), name
    # the folder works too
    assert (
        load_clip(ModelConfig(arch="ViT-S-32-alt", pretrained=str(tmp_path / "vit-s"), threads=1)).info.embed_dim
        == open_clip.get_model_config("ViT-S-32-alt")["embed_dim"]
    )


def test_weights_of_another_arch_are_one_clear_error(tmp_path):
    path = builtin_dir("curation-tiny") / "open_clip_model.safetensors"
    with pytest.raises(UserError, match="do not fit model.arch ViT-S-32-alt"):
        load_clip(ModelConfig(arch="ViT-S-32-alt", pretrained=str(path), threads=1))


def test_missing_local_file_names_the_fix(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_clip(ModelConfig(pretrained=str(tmp_path / "nope.safetensors")))


def test_unknown_tag_is_one_line():
    with pytest.raises(UserError, match="not an open_clip tag of ViT-S-32-alt"):
        load_clip(ModelConfig(arch="ViT-S-32-alt", pretrained="no-such-tag"))


def test_real_tag_without_network_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: the weights must be downloaded
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("curation.models.clip._hub_reachable", lambda timeout=3.0: False)
    started = time.time()
    with pytest.raises(UserError) as info:
        load_clip(ModelConfig(arch="ViT-B-32", pretrained="laion400m_e32", threads=1))
    message = str(info.value)
    assert "\n" not in message and "offline? give a local .safetensors path" in message
    assert time.time() - started < 30
