"""Classifier heads over one CLIP forward pass: trained (safetensors) or zero-shot (text prompts).

A head reads `ImageFeatures` — the L2-normalised image embedding and, for ViT towers, the vision
tower's patch tokens and its patch-embedding (stem) responses — from the same forward pass that
produces the embedding and clip_score, and
returns one probability per image. Trained heads are small MLPs saved as safetensors with their
settings in the file's metadata; zero-shot heads compare the embedding with prompt embeddings.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from curation.errors import UserError

HEAD_FORMAT = "curation-head/1"
# tokens: mean- and max-pooled patch tokens of the vision tower's last layer; stem: spatial statistics
# of its patch embedding (the first conv), which keep contrast, noise and fine strokes that the
# normalised later layers wash out (what watermarks and low aesthetics are made of).
FEATURE_KINDS = ("embedding", "tokens", "stem")


@dataclass
class ImageFeatures:
    """What one forward pass of the image tower yields (float32, on the model's device)."""

    embedding: torch.Tensor  # (B, D), L2-normalised
    tokens: torch.Tensor | None  # (B, N, W) patch tokens, or None for towers without them
    stem: torch.Tensor | None = None  # (B, W, h, w) patch-embedding responses (ViT conv1), or None

    def vector(self, kinds: tuple[str, ...]) -> torch.Tensor:
        parts = []
        for kind in kinds:
            if kind == "embedding":
                parts.append(self.embedding)
            elif kind == "tokens":
                if self.tokens is None:
                    raise UserError(
                        "this head reads patch tokens, which model.arch's image tower does not give: use a ViT"
                    )
                parts += [self.tokens.mean(dim=1), self.tokens.amax(dim=1)]
            elif kind == "stem":
                if self.stem is None:
                    raise UserError(
                        "this head reads the patch embedding, which model.arch's image tower lacks: use a ViT"
                    )
                x = self.stem
                parts += [
                    x.abs().mean(dim=(2, 3)),
                    x.std(dim=(2, 3)),
                    (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(2, 3)),
                    (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean(dim=(2, 3)),
                ]
            else:
                raise ValueError(f"unknown feature kind {kind!r}")
        return torch.cat(parts, dim=1)


def encode_image_features(model: nn.Module, images: torch.Tensor, *, tokens: bool) -> ImageFeatures:
    """One pass of the image tower; with `tokens`, the ViT's patch tokens and stem responses come along.
    For one caller at a time (training): the tower is switched to give its tokens for this pass only."""
    visual = model.visual
    if tokens and hasattr(visual, "output_tokens"):
        previous = visual.output_tokens
        visual.output_tokens = True
        captured: dict[str, torch.Tensor] = {}
        hook = visual.conv1.register_forward_hook(lambda _m, _i, out: captured.__setitem__("stem", out))
        try:
            pooled, patch = visual(images)
        finally:
            visual.output_tokens = previous
            hook.remove()
        return _features(pooled, patch, captured.get("stem"))
    return _features(model.encode_image(images))


class ImageFeatureEncoder:
    """encode_image_features for a model this encoder owns, safe to call from several threads at once
    (an embedding actor works on several shards at once): a tower that must give its tokens is switched
    once, here, and each thread's stem responses are captured apart."""

    def __init__(self, model: nn.Module, *, tokens: bool):
        self.model = model
        self.tokens = tokens and hasattr(model.visual, "output_tokens")
        self._stem = threading.local()
        if self.tokens:
            model.visual.output_tokens = True
            model.visual.conv1.register_forward_hook(self._capture_stem)

    def _capture_stem(self, _module, _inputs, output: torch.Tensor) -> None:
        self._stem.value = output

    def __call__(self, images: torch.Tensor) -> ImageFeatures:
        if not self.tokens:
            return _features(self.model.encode_image(images))
        self._stem.value = None
        pooled, patch = self.model.visual(images)
        return _features(pooled, patch, self._stem.value)


def _features(
    pooled: torch.Tensor, patch: torch.Tensor | None = None, stem: torch.Tensor | None = None
) -> ImageFeatures:
    return ImageFeatures(
        embedding=nn.functional.normalize(pooled.float(), dim=-1),
        tokens=patch.float() if patch is not None else None,
        stem=stem.float() if stem is not None else None,
    )


ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "none": nn.Identity}
OUTPUTS = ("sigmoid", "identity")  # a probability, or the raw output (e.g. LAION's 1-10 aesthetic score)


class MlpHead(nn.Module):
    """Standardise the feature vector, then an MLP: any number of hidden layers of any sizes (none: a linear
    head, logistic regression), each followed by `activation`; the output a probability (sigmoid) or the
    raw value (identity: a score on the head's own scale, as LAION's aesthetic predictor gives).

    The layers are `net.0`, `net.1`, ...: Linear, activation, Linear, activation, ..., Linear. One hidden
    layer with GELU and a sigmoid is what `curate train-head` trains; `curate convert-head` writes
    others."""

    def __init__(
        self,
        in_dim: int,
        hidden: int | tuple[int, ...],
        features: tuple[str, ...],
        *,
        activation: str = "gelu",
        output: str = "sigmoid",
    ):
        super().__init__()
        self.features = features
        self.hidden = (hidden,) if isinstance(hidden, int) and hidden else tuple(hidden or ())
        self.activation, self.output = activation, output
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        layers: list[nn.Module] = []
        width = in_dim
        for size in self.hidden:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
            width = size
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)

    def forward(self, feats: ImageFeatures) -> torch.Tensor:
        raw = self.logits(feats.vector(self.features))
        return torch.sigmoid(raw) if self.output == "sigmoid" else raw

    def save(self, path: Path, **info: str) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()}
        metadata = {
            "format": HEAD_FORMAT,
            "features": ",".join(self.features),
            "hidden": ",".join(str(size) for size in self.hidden) or "0",
            "activation": self.activation,
            "output": self.output,
            **info,
        }
        save_file(tensors, str(path), metadata=metadata)
        path.chmod(0o644)  # package data: readable by everyone


def load_head(path: str | Path, device: torch.device | str = "cpu") -> MlpHead:
    """Load a head saved by `MlpHead.save` (safetensors only)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"head weights {path} not found: give an existing .safetensors file, or weights: builtin")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - a foreign or corrupt file
        raise UserError(f"head weights {path} are not a readable safetensors file: {str(exc)[:120]}") from None
    if metadata.get("format") != HEAD_FORMAT:
        raise UserError(
            f"{path} is not a curation head (no {HEAD_FORMAT} metadata): train one with `curate train-head` "
            "or convert one with `curate convert-head`"
        )
    features = tuple(metadata["features"].split(","))
    hidden = tuple(int(size) for size in metadata["hidden"].split(",") if int(size))
    activation, output = metadata.get("activation", "gelu"), metadata.get("output", "sigmoid")
    if activation not in ACTIVATIONS or output not in OUTPUTS or not set(features) <= set(FEATURE_KINDS):
        raise UserError(f"head weights {path}: unknown settings {metadata}: written by a newer curation?")
    head = MlpHead(tensors["mean"].numel(), hidden, features, activation=activation, output=output)
    try:
        head.load_state_dict(tensors)
    except RuntimeError as exc:
        raise UserError(f"head weights {path} do not match their own layer sizes: {str(exc)[:160]}") from None
    return head.to(device).eval()


def head_info(path: str | Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


class ZeroShotHead(nn.Module):
    """P(prompts) against negative prompts, from the cosine of the embedding with their mean embeddings."""

    features: tuple[str, ...] = ("embedding",)

    def __init__(self, positive: torch.Tensor, negative: torch.Tensor, temperature: float = 100.0):
        super().__init__()
        self.register_buffer("classes", torch.stack([_mean_direction(positive), _mean_direction(negative)]))
        self.temperature = temperature

    def forward(self, feats: ImageFeatures) -> torch.Tensor:
        logits = self.temperature * feats.embedding @ self.classes.T
        return torch.softmax(logits, dim=1)[:, 0]


def _mean_direction(embeddings: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(nn.functional.normalize(embeddings.float(), dim=-1).mean(dim=0), dim=0)


# ---- training ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HeadTraining:
    features: tuple[str, ...] = FEATURE_KINDS
    hidden: int | tuple[int, ...] = 64  # hidden layer sizes (0 or (): a linear head)
    epochs: int = 60
    lr: float = 3e-3
    weight_decay: float = 1e-3
    negative_weight: float = 4.0  # rows without the label weigh more: defects are rare, precision matters
    seed: int = 0


def fit_head(x: np.ndarray, y: np.ndarray, settings: HeadTraining = HeadTraining()) -> MlpHead:
    """Train a head on feature vectors `x` (N, F) and binary labels `y` (N,): minibatch AdamW, weighted BCE."""
    torch.manual_seed(settings.seed)
    xt = torch.from_numpy(np.asarray(x, np.float32))
    yt = torch.from_numpy(np.asarray(y, np.float32))
    if yt.sum() == 0 or yt.sum() == len(yt):
        raise UserError("a head needs both positive and negative rows to learn from: check the label column")
    head = MlpHead(xt.shape[1], settings.hidden, settings.features)
    head.mean.copy_(xt.mean(0))
    head.std.copy_(xt.std(0).clamp_min(1e-4))
    opt = torch.optim.AdamW(head.net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(settings.seed)
    batch = 512
    for _ in range(settings.epochs):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), batch):
            idx = order[start : start + batch]
            weight = 1.0 + (settings.negative_weight - 1.0) * (1.0 - yt[idx])
            loss = nn.functional.binary_cross_entropy_with_logits(head.logits(xt[idx]), yt[idx], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


def metrics_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    predicted = scores >= threshold
    tp = int((predicted & (labels == 1)).sum())
    precision = tp / max(1, int(predicted.sum()))
    recall = tp / max(1, int((labels == 1).sum()))
    return {"precision": round(precision, 4), "recall": round(recall, 4), "threshold": threshold}


def describe(path: str | Path) -> str:
    return json.dumps(head_info(path), sort_keys=True)


# ---- the pipeline's heads ---------------------------------------------------------------------------


def builtin_head_path(arch: str, name: str) -> Path:
    from curation.models.clip import builtin_dir

    return builtin_dir(arch) / "heads" / f"{name}.safetensors"


def load_pipeline_heads(heads, model_cfg, clip) -> dict[str, nn.Module]:
    """Score column -> head module, for the `heads` section of the config (HeadConfig items)."""
    from curation.models.clip import BUILTIN

    loaded: dict[str, nn.Module] = {}
    for head in heads:
        if head.prompts:
            loaded[head.score_column] = zero_shot_head(clip, head.prompts, head.negative_prompts)
            continue
        if head.weights == BUILTIN:
            if model_cfg.pretrained != BUILTIN:
                raise UserError(
                    f"head {head.name}: builtin head weights ship with model.pretrained builtin only: give "
                    "weights: <path.safetensors> or prompts, or drop the head (heads: [])"
                )
            path = builtin_head_path(model_cfg.arch, head.name)
            if not path.is_file():
                raise UserError(f"head {head.name}: no builtin weights for it: give weights: <path> or prompts")
        else:
            path = Path(head.weights).expanduser()
        module = load_head(path, clip.device)
        width = module.mean.numel()
        if {"tokens", "stem"} & set(module.features) and getattr(clip.model.visual, "output_tokens", None) is None:
            raise UserError(
                f"head {head.name} reads patch tokens, which {model_cfg.arch}'s image tower lacks: use a ViT"
            )
        expected = _feature_width(clip, module.features)
        if expected is not None and expected != width:
            raise UserError(
                f"head {head.name} ({path}) was trained on another model ({width} features, this one gives {expected})"
            )
        loaded[head.score_column] = module
    return loaded


def _feature_width(clip, features: tuple[str, ...]) -> int | None:
    width = 0
    for kind in features:
        if kind == "embedding":
            width += clip.info.embed_dim
        elif kind == "tokens":
            tower = getattr(clip.model.visual, "transformer", None)
            if tower is None or not hasattr(tower, "width"):
                return None
            width += 2 * tower.width
        elif kind == "stem":
            conv = getattr(clip.model.visual, "conv1", None)
            if conv is None:
                return None
            width += 4 * conv.out_channels
    return width


@torch.inference_mode()
def zero_shot_head(clip, prompts, negative_prompts) -> ZeroShotHead:
    def encode(texts) -> torch.Tensor:
        tokens = clip.tokenizer(list(texts)).to(clip.device)
        return clip.model.encode_text(tokens).float()

    return ZeroShotHead(encode(prompts), encode(negative_prompts)).to(clip.device).eval()
