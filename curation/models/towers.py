"""The project's own image towers: open_clip's ViT with a convolutional stem in place of its patch projection.

A ViT's first layer cuts the image into patches and projects each with one linear map (`visual.conv1`, a
convolution with kernel = stride = patch size). A small tower at 64 px learns shape slowly that way; a few
3 x 3 convolutions in its place ("early convolutions", Xiao et al. 2021) learn it in a fraction of the steps
and give the same grid of tokens, so everything after the stem (and every head reading the stem's map)
stays as it is. open_clip builds no such stem from a config, so an architecture listed in `CONV_STEMS` is
created by open_clip, has its `conv1` replaced, and only then loads its weights (safetensors, or
`torch.load(weights_only=True)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from curation.models.files import WEIGHTS_FILE
from curation.models.registry import open_clip


@dataclass(frozen=True)
class StemSpec:
    channels: tuple[int, ...]  # of the 3 x 3 convolutions; a 1 x 1 convolution then maps to the tower's width
    strides: tuple[int, ...]  # their product is the patch size, so the token grid is unchanged


CONV_STEMS: dict[str, StemSpec] = {"curation-tiny": StemSpec(channels=(32, 64, 64, 128), strides=(2, 2, 1, 2))}


class ConvStem(nn.Module):
    """3 x 3 convolutions (batch norm, GELU) down to the patch grid, then a 1 x 1 projection to `width`."""

    def __init__(self, spec: StemSpec, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for channels, stride in zip(spec.channels, spec.strides, strict=True):
            layers += [
                nn.Conv2d(previous, channels, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.GELU(),
            ]
            previous = channels
        layers.append(nn.Conv2d(previous, width, 1))
        self.layers = nn.Sequential(*layers)
        self.out_channels = width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def create_model(arch: str, pretrained: str | None = None, device: torch.device | str = "cpu") -> nn.Module:
    """`arch` as open_clip builds it, with the convolutional stem where `CONV_STEMS` lists one; `pretrained`
    is a weights file, an open_clip tag (open_clip's own architectures only) or None (random init)."""
    spec = CONV_STEMS.get(arch)
    if spec is None:
        return open_clip.create_model(arch, pretrained=pretrained, device=device, weights_only=True)
    model = open_clip.create_model(arch, device=device)
    patch = model.visual.conv1.kernel_size[0]
    if math.prod(spec.strides) != patch:
        raise ValueError(f"{arch}: the stem's strides {spec.strides} must multiply to the patch size {patch}")
    model.visual.conv1 = ConvStem(spec, model.visual.conv1.out_channels).to(device)
    if pretrained:
        if not Path(pretrained).is_file():
            raise ValueError(f"{arch} has the project's own stem: give its weights file, not {pretrained!r}")
        model.load_state_dict(_read_weights(Path(pretrained)), strict=True)
    return model


def load_model_dir(folder: Path) -> tuple[nn.Module, object]:
    """The model and tokenizer of a folder written by `save_open_clip_dir`, in eval mode."""
    arch = model_dir_arch(folder)
    model = create_model(arch, pretrained=str(Path(folder) / WEIGHTS_FILE))
    model.eval()
    return model, open_clip.get_tokenizer(arch)


def model_dir_arch(folder: Path) -> str:
    """The architecture a folder written by `save_open_clip_dir` holds (from its weights' metadata)."""
    from safetensors import safe_open

    weights = Path(folder) / WEIGHTS_FILE
    with safe_open(str(weights), framework="pt") as handle:
        arch = (handle.metadata() or {}).get("arch")
    if not arch:
        raise ValueError(f"{weights} names no architecture in its metadata: rewrite it with `curate train-clip`")
    return arch


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    return {name.removeprefix("module."): tensor for name, tensor in state.items()}
