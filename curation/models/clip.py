"""Load a CLIP model through open_clip: by architecture name and `pretrained` (tag, local file or none).

The project's own architectures (configs/*.json) are registered with open_clip on import, so
`curation-tiny` is created exactly like `ViT-B-32`. Weights load only through safetensors or
`torch.load(weights_only=True)` (open_clip's loader, called with weights_only=True).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from curation.config import ModelConfig
from curation.errors import UserError

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of the pipeline needs to know about a model without building it."""

    model_id: str
    image_size: int
    embed_dim: int


def architecture_config(arch: str) -> dict:
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        known = ", ".join(sorted(open_clip.list_models())[:8])
        raise UserError(f"unknown model.arch {arch!r}: use an open_clip architecture name (e.g. {known}, ...)")
    return cfg


def model_info(cfg: ModelConfig) -> ModelInfo:
    arch = architecture_config(cfg.arch)
    size = arch["vision_cfg"]["image_size"]
    size = size if isinstance(size, int) else size[0]
    source = cfg.pretrained if cfg.pretrained else f"random-init(seed={cfg.seed})"
    return ModelInfo(model_id=f"{cfg.arch}:{source}", image_size=size, embed_dim=arch["embed_dim"])


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
    pretrained = _resolve_pretrained(cfg.pretrained)
    torch.manual_seed(cfg.seed)  # random init is part of the model's identity
    try:
        model = open_clip.create_model(cfg.arch, pretrained=pretrained, device=device, weights_only=True)
    except RuntimeError as exc:
        if pretrained and "download" not in str(exc).lower():
            raise UserError(f"weights {cfg.pretrained} do not fit model.arch {cfg.arch}: {str(exc)[:160]}") from None
        raise UserError(
            f"cannot load pretrained weights {cfg.pretrained!r} for {cfg.arch}: offline? give a local .safetensors path"
        ) from None
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


def _resolve_pretrained(pretrained: str | None) -> str | None:
    if not pretrained:
        return None
    path = Path(pretrained).expanduser()
    looks_like_path = any(sep in pretrained for sep in ("/", "\\")) or path.suffix in (".safetensors", ".pt", ".bin")
    if looks_like_path:
        if not path.is_file():
            raise UserError(f"model.pretrained file {pretrained} not found: give an existing .safetensors path")
        return str(path)
    return pretrained


def save_open_clip_dir(model: torch.nn.Module, arch: str, out_dir: Path) -> None:
    """Write a folder open_clip reloads offline: open_clip_config.json + open_clip_model.safetensors."""
    from safetensors.torch import save_model

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": architecture_config(arch)}, indent=2))
    save_model(model, str(out_dir / "open_clip_model.safetensors"))
