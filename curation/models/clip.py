"""Load a CLIP model through open_clip: by architecture name and `pretrained` (tag, local file or none).

The project's own architectures are registered with open_clip once, in registry.py, so
`curation-tiny` is created exactly like `ViT-B-32`. `pretrained: builtin` is the trained tiny CLIP that
ships in the package (assets/<arch>/, made by `curate train-clip`). Weights load only through
safetensors or `torch.load(weights_only=True)` (open_clip's loader, called with weights_only=True).
An open_clip tag needs a download: with no network it fails within seconds with one clear line.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from curation.config import ModelConfig
from curation.errors import UserError
from curation.io.urls import answers
from curation.models.info import (  # noqa: F401 - re-exported: the model's facts live in info.py
    ASSETS_DIR,
    BUILTIN,
    CONFIG_DIR,
    WEIGHTS_FILE,
    ModelInfo,
    architecture_config,
    builtin_dir,
    builtin_weights,
    model_image_size,
    model_info,
)
from curation.models.registry import open_clip, open_clip_architecture  # noqa: F401 - re-exported
from curation.models.towers import create_model
from curation.models.weights import local_weights_path, weights_problem

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def resolve_device(cfg: ModelConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and cfg.num_gpus > 0 and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("model.device is cuda but no GPU is visible: set model.device=cpu or run on a GPU node")
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_dtype(cfg: ModelConfig, device: torch.device) -> torch.dtype | None:
    """Mixed precision on GPU (bf16 by default), full fp32 on CPU unless asked otherwise."""
    if cfg.precision == "fp32" or (cfg.precision == "auto" and device.type == "cpu"):
        return None
    if cfg.precision == "fp16":
        return torch.float16
    return torch.bfloat16


@dataclass
class LoadedClip:
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    mean: torch.Tensor  # (1, 3, 1, 1) on device
    std: torch.Tensor
    amp_dtype: torch.dtype | None
    info: ModelInfo


def load_clip(cfg: ModelConfig) -> LoadedClip:
    info = model_info(cfg)
    device = resolve_device(cfg)
    pretrained = _resolve_pretrained(cfg.pretrained, cfg.arch)
    torch.manual_seed(cfg.seed)  # random init is part of the model's identity
    if pretrained and not Path(pretrained).is_file():
        model = _create_from_tag(cfg.arch, pretrained, device)
    else:
        try:
            model = create_model(cfg.arch, pretrained=pretrained, device=device)
        except Exception as exc:
            # The driver checked the file (models/weights.py); say what is wrong if it changed since.
            problem = weights_problem(Path(pretrained)) if pretrained else None
            if problem is not None:
                raise UserError(f"model.pretrained {cfg.pretrained} {problem}") from None
            if not isinstance(exc, (RuntimeError, ValueError, KeyError)):
                raise
            raise UserError(f"weights {cfg.pretrained} do not fit model.arch {cfg.arch}: {str(exc)[:160]}") from None
    model.eval()
    preprocess = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = torch.tensor(preprocess.get("mean", OPENAI_MEAN), device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.get("std", OPENAI_STD), device=device).view(1, 3, 1, 1)
    return LoadedClip(
        model=model,
        tokenizer=open_clip.get_tokenizer(cfg.arch),
        device=device,
        mean=mean,
        std=std,
        amp_dtype=autocast_dtype(cfg, device),
        info=info,
    )


def _resolve_pretrained(pretrained: str | None, arch: str) -> str | None:
    """None (random init), the path of a weights file, or an open_clip tag (checked against the arch)."""
    if not pretrained:
        return None
    if pretrained == BUILTIN:
        return str(builtin_weights(arch))
    path = local_weights_path(pretrained)  # a file, or a folder written by `curate train-clip`
    if path is not None:
        return str(path)
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        known = ", ".join(tags[:6]) or "none"
        raise UserError(
            f"model.pretrained {pretrained!r} is not an open_clip tag of {arch} (known: {known}): "
            "give a tag, a local .safetensors path, builtin, or null"
        )
    return pretrained


HUB_HOST = ("huggingface.co", 443)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers within `timeout`."""
    return answers(*HUB_HOST, timeout)


def _create_from_tag(arch: str, tag: str, device: torch.device) -> torch.nn.Module:
    """Create `arch` with a tag's weights: from the local cache, or downloaded when the hub answers."""
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable()
    try:
        with _offline_env(offline), _socket_timeout(10.0):
            # fetch (or find in the cache) first: building a large model only to fail after is slow
            if not download_pretrained(get_pretrained_cfg(arch, tag)):
                raise FileNotFoundError(tag)
            return open_clip.create_model(arch, pretrained=tag, device=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - hub, cache and network errors come in many types
        why = "no network and not in the local cache" if offline else f"download failed ({type(exc).__name__})"
        raise UserError(
            f"cannot load pretrained weights {tag!r} for {arch}: {why}; offline? give a local .safetensors path "
            "in model.pretrained"
        ) from None


@contextlib.contextmanager
def _offline_env(offline: bool):
    if not offline:
        yield
        return
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:  # huggingface_hub reads the variable once, at import: set its constant too
        from huggingface_hub import constants
    except ImportError:
        constants = None
    previous_constant = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = previous_constant
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def prepare_images(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) pixels as decoded by the decode stage -> the model's normalised (B, 3, H, W)."""
    return (pixels.permute(0, 3, 1, 2).float().div_(255) - mean) / std


def save_open_clip_dir(model: torch.nn.Module, arch: str, out_dir: Path, *, fp16: bool = True) -> Path:
    """Write a folder `towers.load_model_dir` reloads offline: open_clip_config.json + open_clip_model.safetensors
    (whose metadata names the architecture). open_clip itself reloads it only where the tower has no
    project stem.

    Floating-point weights are stored as fp16 (half the size; open_clip casts them back on load).
    """
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    preprocess = {"size": model_image_size(arch), "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)}
    config = {"model_cfg": architecture_config(arch), "preprocess_cfg": preprocess}
    (out_dir / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        state[name] = (tensor.half() if fp16 and tensor.is_floating_point() else tensor).contiguous().clone()
    path = out_dir / WEIGHTS_FILE
    save_file(state, str(path), metadata={"arch": arch})
    path.chmod(0o644)  # package data: readable by everyone
    return path
