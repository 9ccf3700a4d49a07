"""`curate train-clip`: train the project's tiny CLIP (and its heads) from scratch on the synthetic world.

Reproduces the model the package ships (curation/models/assets/curation-tiny/):

    curate train-clip --output curation/models/assets/curation-tiny

1. Render a seeded training set of scenes through the pipeline's own JPEG decode path (so the model
   sees exactly the pixels the decode stage gives it), a fraction of them with the image defects the
   heads learn (unsafe motif, watermark, low aesthetic); their captions say so most of the time, as
   web alt-text sometimes does.
2. Train an open_clip CLIP with the symmetric contrastive loss (AdamW, warmup + cosine, bf16 autocast).
3. Render a separate labelled set, embed it with the trained model (the pipeline's single forward
   pass: embedding + patch tokens) and fit one small MLP head per defect; calibrate each threshold on
   held-out rows.
4. Measure image->text R@1 among 100 candidates and swapped-caption AUC on held-out pairs from a seed
   the model never saw; write open_clip_config.json, open_clip_model.safetensors (fp16), heads/*.safetensors,
   metrics.json and MODEL_CARD.md.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from curation.errors import UserError
from curation.lab.synth import effects
from curation.lab.synth.defects import planter_rng
from curation.lab.synth.world import (
    COLOURS,
    COUNTS,
    SHAPES,
    TEXTURES,
    Scene,
    encode_jpeg,
    lookalike_scene,
    sample_scene,
    sample_size,
    shape_sibling,
    sibling_scene,
)
from curation.models.clip import (
    OPENAI_MEAN,
    OPENAI_STD,
    WEIGHTS_FILE,
    architecture_config,
    model_image_size,
    prepare_images,
    save_open_clip_dir,
)
from curation.models.heads import FEATURE_KINDS, HeadTraining, encode_image_features, fit_head, metrics_at
from curation.models.towers import CONV_STEMS, create_model, load_model_dir, model_dir_arch

KINDS = ("clean", "unsafe", "watermark", "low_aesthetic")
TRAIN_MIX = (0.7, 0.1, 0.1, 0.1)  # of KINDS, in the CLIP's training set
HEAD_MIX = (0.6, 0.14, 0.14, 0.12)  # in the heads' labelled set
HEADS = {"unsafe": "unsafe", "watermark": "watermark", "aesthetic": "low_aesthetic"}  # head -> defect kind
CHUNK = 500  # images per rendering task; each chunk has its own seed, so workers do not change the data
ATTRIBUTES = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "count": COUNTS,
    "texture": TEXTURES,
    "background": tuple(COLOURS),
}


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    arch: str = "curation-tiny"
    seed: int = 0
    images: int = 16_000  # distinct training images (re-used across steps with new captions and flips)
    steps: int = 320
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 30
    head_images: int = 24_000
    eval_pairs: int = 1_000
    eval_seed: int = 1_000_003  # held out: neither the training nor the head set comes from it
    threads: int = 2
    workers: int = 2
    bf16: bool = True
    heads: bool = True
    heads_only: bool = False  # keep the CLIP already in the output folder; retrain its heads
    # Recipe options for an embedding that semantic dedup can use (off: the shipped model's recipe):
    siblings: bool = False  # training scenes in pairs one attribute apart (same layout), in the same batch
    lookalikes: bool = False  # training scenes in pairs of the same colours and texture, another form and layout
    augment: bool = False  # besides mirroring, images flipped upside down and reframed at random, every step
    instance_weight: float = 0.0  # image-to-image term: two augmented views of each image against the batch
    instance_temperature: float = 0.05
    shape_siblings: bool = False  # pairs: half the same scene with another shape (same layout), half lookalikes
    attribute_weight: float = 0.0  # a linear probe per scene attribute on the image embedding, trained along
    attribute_mix: tuple[float, ...] = (1.0,) * len(ATTRIBUTES)  # the probes' relative weights, in ATTRIBUTES order
    probe_steps: int = 0  # steps of the image tower with the probes alone, before the CLIP training
    init_from: str | None = None  # a folder `curate train-clip` wrote: go on training that CLIP instead of a fresh one

    @property
    def pairing(self) -> str | None:
        """How training scenes come in pairs: "siblings", "lookalikes", "shape_siblings" or None."""
        chosen = [name for name in PAIRINGS if getattr(self, name)]
        if len(chosen) > 1:
            flags = " and ".join("--" + name.replace("_", "-") for name in chosen)
            raise UserError(f"{flags} pair the training scenes different ways: choose one")
        return chosen[0] if chosen else None


PAIRINGS = ("siblings", "lookalikes", "shape_siblings")


@dataclass
class ImageSet:
    pixels: np.ndarray  # (N, S, S, 3) uint8, as the decode stage gives them
    scenes: list[Scene]
    kinds: list[str]
    variants: list[str | None]
    base_captions: list[str] = field(default_factory=list)


# ---- data ---------------------------------------------------------------------------------------------


def _render_chunk(args: tuple) -> tuple[bytes, list, list, list, list]:
    seed, stream, chunk, count, mix, size, pairing = args
    from curation.stages.decode import decode_image

    rng = planter_rng(seed, f"{stream}/{chunk}")
    pixels, scenes, kinds, variants, captions = [], [], [], [], []
    scene = width = height = None
    for i in range(count):
        if pairing == "siblings" and i % 2:
            scene = sibling_scene(scene, rng)  # at the same size: only the changed attribute tells them apart
        elif pairing == "lookalikes" and i % 2:
            scene = lookalike_scene(scene, rng)
            width, height = sample_size(rng)
        elif pairing == "shape_siblings" and i % 2:  # at the same size; a shape sibling keeps the layout too
            scene = shape_sibling(scene, rng) if rng.random() < 0.5 else lookalike_scene(scene, rng)
        else:
            scene = sample_scene(rng)
            width, height = sample_size(rng)
        kind = KINDS[int(rng.choice(len(KINDS), p=mix))]
        image = scene.render(width, height)
        variant = None
        if kind == "unsafe":
            image = effects.draw_unsafe_motif(image, rng)
        elif kind == "watermark":
            variant = effects.WATERMARK_STYLES[int(rng.integers(len(effects.WATERMARK_STYLES)))]
            image = effects.overlay_watermark(image, rng, style=variant)
        elif kind == "low_aesthetic":
            variant = effects.LOW_AESTHETIC_VARIANTS[int(rng.integers(len(effects.LOW_AESTHETIC_VARIANTS)))]
            image = effects.degrade(image, rng, variant=variant)
        decoded = decode_image(encode_jpeg(image), size=size, max_pixels=1 << 30)
        pixels.append(decoded.pixels)
        scenes.append(scene)
        kinds.append(kind)
        variants.append(variant)
        captions.append(scene.caption(rng))
    return b"".join(pixels), scenes, kinds, variants, captions


def render_set(
    count: int, *, seed: int, stream: str, mix: tuple[float, ...], size: int, workers: int, pairing: str | None = None
) -> ImageSet:
    """`count` images of the world with defect kinds drawn from `mix`, decoded as the pipeline does. With
    `pairing` "siblings" (or "lookalikes"), images 2i and 2i+1 are one scene and its sibling
    (`sibling_scene`; or its lookalike, `lookalike_scene`; "shape_siblings": either the scene with another
    shape, `shape_sibling`, or a lookalike, half and half); CHUNK is even."""
    jobs = [(seed, stream, c, min(CHUNK, count - c * CHUNK), mix, size, pairing) for c in range(-(-count // CHUNK))]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_render_chunk, jobs))
    else:
        parts = [_render_chunk(job) for job in jobs]
    pixels = np.frombuffer(b"".join(p[0] for p in parts), np.uint8).reshape(-1, size, size, 3)
    return ImageSet(
        pixels=pixels,
        scenes=[s for p in parts for s in p[1]],
        kinds=[k for p in parts for k in p[2]],
        variants=[v for p in parts for v in p[3]],
        base_captions=[c for p in parts for c in p[4]],
    )


def training_caption(scene: Scene, kind: str, variant: str | None, rng: np.random.Generator) -> str:
    """A caption of the scene; for a defect, most of the time one that says so (as alt-text may)."""
    caption = scene.caption(rng)
    if kind == "clean" or rng.random() < 0.2:
        return caption
    if kind == "unsafe":
        return effects.with_cue(caption, effects.UNSAFE_DESCRIPTIONS, rng)
    if kind == "watermark":
        return effects.with_cue(caption, effects.WATERMARK_DESCRIPTIONS, rng)
    return effects.with_cue(caption, effects.LOW_AESTHETIC_DESCRIPTIONS[variant], rng)


# ---- training -----------------------------------------------------------------------------------------


def _tensor(pixels: np.ndarray) -> torch.Tensor:
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return prepare_images(torch.from_numpy(np.array(pixels, copy=True)), mean, std)


PROBE_SCALE = 10.0  # the probes read the L2-normalised embedding, scaled to logits' range
REFRAME = 0.15  # at most this much of each side is cut by a reframing augmentation
REFRAMED = 0.75  # the share of images reframed


def augment_batch(images: torch.Tensor, rng: np.random.Generator, *, full: bool) -> torch.Tensor:
    """Half of the images mirrored; with `full`, also a quarter flipped upside down and REFRAMED of them
    reframed (up to REFRAME of each side cut, resized back): the embedding of a re-upload that dodges a perceptual
    hash (mirrored, flipped, re-cropped) should stay that of its original."""
    batch, size = images.shape[0], images.shape[-1]
    mirror = torch.from_numpy(rng.random(batch) < 0.5)
    images[mirror] = images[mirror].flip(-1)
    if not full:
        return images
    flip = torch.from_numpy(rng.random(batch) < 0.25)
    images[flip] = images[flip].flip(-2)
    for i in np.flatnonzero(rng.random(batch) < REFRAMED):
        left, top, right, bottom = np.round(rng.uniform(0, REFRAME, size=4) * size).astype(int)
        crop = images[i : i + 1, :, top : size - bottom, left : size - right]
        images[i] = nn.functional.interpolate(
            crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0]
    return images


def train_model(data: ImageSet, settings: TrainSettings, log: Callable[[str], None]) -> tuple[nn.Module, dict]:
    """The shipped model's training: fresh templated captions of each scene every step."""

    def captions(idx: np.ndarray, rng: np.random.Generator) -> list[str]:
        return [training_caption(data.scenes[i], data.kinds[i], data.variants[i], rng) for i in idx]

    attributes = attribute_labels(data.scenes) if settings.attribute_weight else None
    return train_contrastive(
        data.pixels, captions, settings, log, pairs=settings.pairing is not None, attributes=attributes
    )


def attribute_labels(scenes: list[Scene]) -> np.ndarray:
    """(N, len(ATTRIBUTES)) class indices: what each scene's shape, colour, count, texture and background are."""
    return np.array(
        [[values.index(getattr(scene, name)) for name, values in ATTRIBUTES.items()] for scene in scenes], np.int64
    )


def train_on_pairs(
    pixels: np.ndarray, captions: list[str], settings: TrainSettings, log: Callable[[str], None]
) -> tuple[nn.Module, dict]:
    """Train a CLIP from scratch on fixed (image, caption) pairs, as they are (e.g. a curated subset)."""
    if len(captions) != len(pixels) or len(captions) < 2:
        raise UserError(f"training needs at least 2 image-caption pairs, got {len(captions)}: use a larger pool")
    return train_contrastive(pixels, lambda idx, rng: [captions[i] for i in idx], settings, log)


def train_contrastive(
    pixels: np.ndarray,
    captions_for: Callable[[np.ndarray, np.random.Generator], list[str]],
    settings: TrainSettings,
    log: Callable[[str], None],
    *,
    pairs: bool = False,
    attributes: np.ndarray | None = None,
) -> tuple[nn.Module, dict]:
    """The training loop: `settings.steps` steps of `settings.batch_size` images drawn without replacement
    (with `pairs`, images 2i and 2i+1 always together), augmented (`augment_batch`), captions from
    `captions_for(indices, rng)`; symmetric contrastive loss, AdamW, warmup + cosine. With `attributes`
    (`attribute_labels`) and `settings.attribute_weight`, linear probes on the image embedding learn each
    scene attribute along with it (the probes are dropped afterwards), a push towards an embedding that
    tells shapes and counts apart, not only colours and layout. The same settings and data give the same model."""
    import open_clip

    torch.manual_seed(settings.seed)
    model = starting_model(settings)
    model.train()
    tokenizer = open_clip.get_tokenizer(settings.arch)
    probes = None
    if attributes is not None and settings.attribute_weight:
        probes = nn.ModuleList(nn.Linear(model.visual.output_dim, len(values)) for values in ATTRIBUTES.values())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    probe_params = [] if probes is None else [{"params": list(probes.parameters()), "weight_decay": 0.0}]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": settings.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
            *probe_params,
        ],
        lr=settings.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    rng = np.random.default_rng([settings.seed, 17])
    n = len(pixels)
    batch = min(settings.batch_size, n) // 2 * 2 if pairs else min(settings.batch_size, n)
    labels = torch.arange(batch)
    started = time.time()
    if probes is not None and settings.probe_steps:
        _probes_first(model.visual, probes, pixels, attributes, settings, rng, log)
    losses, probe_losses = [], []
    for step in range(settings.steps):
        lr = settings.lr * min(1.0, (step + 1) / settings.warmup)
        if step >= settings.warmup:
            progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
            lr = settings.lr * 0.5 * (1 + math.cos(math.pi * progress))
        for group in opt.param_groups:
            group["lr"] = lr
        if pairs:
            idx = (2 * rng.choice(n // 2, batch // 2, replace=False)[:, None] + np.arange(2)).reshape(-1)
        else:
            idx = rng.choice(n, batch, replace=False)
        images = augment_batch(_tensor(pixels[idx]), rng, full=settings.augment)
        tokens = tokenizer(captions_for(idx, rng))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.bf16):
            image_features, text_features, scale = model(images, tokens)
            logits = scale * image_features @ text_features.T
            if settings.instance_weight:
                other_view = augment_batch(_tensor(pixels[idx]), rng, full=settings.augment)
                view_features = nn.functional.normalize(model.encode_image(other_view), dim=-1)
                views = (image_features @ view_features.T).float() / settings.instance_temperature
        logits = logits.float()
        loss = (nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.T, labels)) / 2
        if settings.instance_weight:
            instance = (nn.functional.cross_entropy(views, labels) + nn.functional.cross_entropy(views.T, labels)) / 2
            loss = loss + settings.instance_weight * instance
        if probes is not None:
            seen = [image_features, view_features] if settings.instance_weight else [image_features]
            features = PROBE_SCALE * torch.cat(seen).float()
            truth = torch.from_numpy(attributes[idx]).repeat(len(seen), 1)
            probe_loss = _probe_loss(probes, features, truth, settings.attribute_mix)
            loss = loss + settings.attribute_weight * probe_loss
            probe_losses.append(float(probe_loss.detach()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        if step % 20 == 0 or step == settings.steps - 1:
            log(
                f"step {step + 1}/{settings.steps}  loss {np.mean(losses[-20:]):.3f}  lr {lr:.2e}  {time.time() - started:.0f} s"
            )
    model.eval()
    metrics = {"final_loss": round(float(np.mean(losses[-20:])), 4), "train_s": round(time.time() - started, 1)}
    if probe_losses:  # mean cross-entropy of the attribute probes (log of the class count at the start)
        metrics["final_attribute_loss"] = round(float(np.mean(probe_losses[-20:])), 4)
    return model, metrics


def starting_model(settings: TrainSettings) -> nn.Module:
    """A fresh model of `settings.arch`, or with `init_from` the CLIP of that folder, to train further."""
    if settings.init_from is None:
        return create_model(settings.arch)
    folder = Path(settings.init_from)
    if not (folder / WEIGHTS_FILE).is_file():
        raise UserError(
            f"--init-from {folder} holds no trained CLIP ({WEIGHTS_FILE}): give a folder curate train-clip wrote"
        )
    arch = model_dir_arch(folder)
    if arch != settings.arch:
        raise UserError(
            f"--init-from {folder} holds a {arch}, not a {settings.arch}: give a folder of the same architecture"
        )
    model, _ = load_model_dir(folder)
    return model.float().train()  # the stored fp16 weights, trained on in fp32 as a fresh model is


def _probe_loss(
    probes: nn.ModuleList, features: torch.Tensor, truth: torch.Tensor, mix: tuple[float, ...]
) -> torch.Tensor:
    """The probes' cross-entropies, weighted by `mix` (normalised: equal weights give their mean)."""
    losses = [
        weight * nn.functional.cross_entropy(probe(features), truth[:, i])
        for i, (probe, weight) in enumerate(zip(probes, mix, strict=True))
    ]
    return sum(losses) / sum(mix)


def _probes_first(
    visual: nn.Module,
    probes: nn.ModuleList,
    pixels: np.ndarray,
    attributes: np.ndarray,
    settings: TrainSettings,
    rng: np.random.Generator,
    log: Callable[[str], None],
) -> None:
    """A curriculum: the image tower learns the scene attributes (shape above all, by `attribute_mix`) from
    the probes alone, before the captions and the image-to-image term take over."""
    opt = torch.optim.AdamW([*visual.parameters(), *probes.parameters()], lr=settings.lr, weight_decay=0.05)
    batch = min(settings.batch_size, len(pixels))
    started = time.time()
    for step in range(settings.probe_steps):
        for group in opt.param_groups:
            group["lr"] = settings.lr * min(1.0, (step + 1) / settings.warmup)
        idx = rng.choice(len(pixels), batch, replace=False)
        images = augment_batch(_tensor(pixels[idx]), rng, full=settings.augment)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.bf16):
            features = nn.functional.normalize(visual(images), dim=-1)
        loss = _probe_loss(
            probes, PROBE_SCALE * features.float(), torch.from_numpy(attributes[idx]), settings.attribute_mix
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == settings.probe_steps - 1:
            log(
                f"probes first: step {step + 1}/{settings.probe_steps}  loss {float(loss.detach()):.3f}  {time.time() - started:.0f} s"
            )


# ---- features, heads and metrics ----------------------------------------------------------------------


@torch.inference_mode()
def embed_set(
    model: nn.Module, tokenizer, pixels: np.ndarray, captions: list[str] | None, *, tokens: bool, batch: int = 500
):
    """Image embeddings, head feature vectors (embedding + pooled patch tokens) and text embeddings."""
    emb, feats, txt = [], [], []
    for start in range(0, len(pixels), batch):
        features = encode_image_features(model, _tensor(pixels[start : start + batch]), tokens=tokens)
        emb.append(features.embedding.numpy())
        if tokens:
            feats.append(features.vector(FEATURE_KINDS).numpy())
        if captions is not None:
            t = model.encode_text(tokenizer(captions[start : start + batch])).float()
            txt.append(nn.functional.normalize(t, dim=-1).numpy())
    return (
        np.concatenate(emb),
        np.concatenate(feats) if feats else None,
        np.concatenate(txt) if captions is not None else None,
    )


def retrieval_metrics(model: nn.Module, tokenizer, data: ImageSet, candidates: int = 100) -> dict:
    """Image->text R@1 among `candidates` captions (groups of held-out pairs), and swapped-caption AUC."""
    image, _, text = embed_set(model, tokenizer, data.pixels, data.base_captions, tokens=False)
    groups = len(image) // candidates
    hits = 0
    for g in range(groups):
        sl = slice(g * candidates, (g + 1) * candidates)
        sims = image[sl] @ text[sl].T
        hits += int((sims.argmax(axis=1) == np.arange(candidates)).sum())
    r1 = hits / max(1, groups * candidates)
    # swapped captions: each image against the caption of a scene differing in shape and colour
    rng = np.random.default_rng(5)
    positive = (image * text).sum(axis=1)
    negative = []
    for i, scene in enumerate(data.scenes):
        for _ in range(50):
            j = int(rng.integers(len(data.scenes)))
            other = data.scenes[j]
            if other.shape != scene.shape and other.colour != scene.colour:
                negative.append(float(image[i] @ text[j]))
                break
    auc = _auc(positive, np.array(negative))
    gap = float(np.quantile(positive, 0.01) - np.quantile(negative, 0.99))
    return {
        "retrieval_r1_100": round(r1, 4),
        "retrieval_pairs": groups * candidates,
        "swapped_caption_auc": round(auc, 5),
        "aligned_score_p01": round(float(np.quantile(positive, 0.01)), 4),
        "swapped_score_p99": round(float(np.quantile(negative, 0.99)), 4),
        "score_gap": round(gap, 4),
    }


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    scores = np.concatenate([positive, negative])
    ranks = scores.argsort().argsort() + 1
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_heads(model: nn.Module, data: ImageSet, out_dir: Path, settings: TrainSettings, log) -> dict:
    """Fit one MLP head per defect kind on 80 % of the labelled set; pick thresholds on the other 20 %."""
    _, features, _ = embed_set(model, None, data.pixels, None, tokens=True)
    kinds = np.array(data.kinds)
    rng = np.random.default_rng([settings.seed, 23])
    holdout = rng.random(len(kinds)) < 0.2
    report = {}
    for name, kind in HEADS.items():
        positive = kinds == kind
        # aesthetic scores quality (high = good): its positives are the rows that are *not* degraded, and
        # the rows to be sure about before rejecting are the degraded ones (weight on the positives)
        y = (~positive if name == "aesthetic" else positive).astype(np.float32)
        training = HeadTraining(seed=settings.seed, negative_weight=0.25 if name == "aesthetic" else 4.0)
        head = fit_head(features[~holdout], y[~holdout], training)
        with torch.no_grad():
            scores = head(_FeatureRows(torch.from_numpy(features[holdout]))).numpy()
        defect = positive[holdout].astype(int)
        defect_score = 1 - scores if name == "aesthetic" else scores
        metrics = metrics_at(defect_score, defect, 0.5)
        head.save(
            out_dir / "heads" / f"{name}.safetensors",
            name=name,
            arch=settings.arch,
            defect=kind,
            positive="not " + kind if name == "aesthetic" else kind,
        )
        report[name] = {**metrics, "auc": round(_auc(defect_score[defect == 1], defect_score[defect == 0]), 5)}
        log(
            f"head {name}: held-out P {metrics['precision']:.3f} R {metrics['recall']:.3f} AUC {report[name]['auc']:.4f}"
        )
    return report


class _FeatureRows:
    """Stand-in for ImageFeatures when the head's feature vector is already computed."""

    def __init__(self, vectors: torch.Tensor):
        self.vectors = vectors

    def vector(self, kinds) -> torch.Tensor:
        return self.vectors


# ---- the command --------------------------------------------------------------------------------------


def train_clip(
    out_dir: str | Path, settings: TrainSettings = TrainSettings(), log: Callable[[str], None] = print
) -> dict:
    """Train the tiny CLIP and its heads; write the folder the pipeline reloads offline. Returns the metrics."""

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out} is a file: give a directory")
    architecture_config(settings.arch)  # a clear error for an unknown arch
    started = time.time()
    torch.set_num_threads(settings.threads)
    size = model_image_size(settings.arch)
    if settings.heads_only:
        if not (out / WEIGHTS_FILE).is_file():
            raise UserError(f"--heads-only: {out} holds no trained CLIP ({WEIGHTS_FILE}): train one first")
        previous = json.loads((out / "metrics.json").read_text())
        settings = TrainSettings(**{**previous["settings"], "heads": True, "heads_only": False})
        train_metrics = {
            k: previous["metrics"][k]
            for k in ("render_s", "final_loss", "train_s", "earlier_commands")
            if k in previous["metrics"]
        }
        render_s = train_metrics.pop("render_s")
        clip_s = previous["metrics"]["total_s"] - previous["metrics"].get("heads_s", 0.0)
    else:
        log(f"rendering {settings.images} training images ({size} px) ...")
        train = render_set(
            settings.images,
            seed=settings.seed,
            stream="clip-train",
            mix=TRAIN_MIX,
            size=size,
            workers=settings.workers,
            pairing=settings.pairing,
        )
        render_s = time.time() - started
        earlier = earlier_commands(settings.init_from)  # read before the output folder (maybe that one) is rewritten
        model, train_metrics = train_model(train, settings, log)
        if earlier:
            train_metrics["earlier_commands"] = earlier
        del train
        save_open_clip_dir(model, settings.arch, out)
        clip_s = None
    # evaluate the weights as shipped (fp16 storage), reloaded the way the pipeline loads them
    model, tokenizer = load_model_dir(out)
    metrics: dict = {"render_s": round(render_s, 1), **train_metrics}
    if settings.heads:
        heads_started = time.time()
        log(f"rendering {settings.head_images} labelled images for the heads ...")
        labelled = render_set(
            settings.head_images, seed=settings.seed, stream="heads", mix=HEAD_MIX, size=size, workers=settings.workers
        )
        metrics["heads"] = train_heads(model, labelled, out, settings, log)
        metrics["heads_s"] = round(time.time() - heads_started, 1)
    held_out = render_set(
        settings.eval_pairs,
        seed=settings.eval_seed,
        stream="retrieval",
        mix=(1.0, 0, 0, 0),
        size=size,
        workers=settings.workers,
    )
    metrics.update(retrieval_metrics(model, tokenizer, held_out))
    metrics["total_s"] = round(time.time() - started + (clip_s or 0.0), 1)
    metrics["weights_bytes"] = (out / WEIGHTS_FILE).stat().st_size
    log(
        f"R@1 (image->text, 100 candidates) {metrics['retrieval_r1_100']:.3f}  swapped-caption AUC "
        f"{metrics['swapped_caption_auc']:.4f}  total {metrics['total_s']:.0f} s"
    )
    (out / "metrics.json").write_text(json.dumps({"settings": asdict(settings), "metrics": metrics}, indent=2) + "\n")
    (out / "MODEL_CARD.md").write_text(model_card(settings, metrics))
    return metrics


def parse_attribute_mix(text: str) -> tuple[float, ...]:
    """ "shape=4,count=1" -> the probes' weights in ATTRIBUTES order (unnamed attributes weigh 1)."""
    weights = dict.fromkeys(ATTRIBUTES, 1.0)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if name.strip() not in weights or weight < 0:
            raise UserError(
                f"--attribute-mix {text!r}: write name=weight pairs of {', '.join(ATTRIBUTES)}, e.g. shape=4,count=1"
            )
        weights[name.strip()] = weight
    if not sum(weights.values()):
        raise UserError(f"--attribute-mix {text!r}: at least one weight must be above 0")
    return tuple(weights.values())


def format_attribute_mix(mix: tuple[float, ...]) -> str:
    return ",".join(f"{name}={weight:g}" for name, weight in zip(ATTRIBUTES, mix, strict=True))


def training_command(settings: TrainSettings) -> str:
    """The `curate train-clip` command line that trains with `settings`, into the shipped model's folder."""
    default = TrainSettings()
    flags = [
        f"--{k.replace('_', '-')} {v}"
        for k, v in asdict(settings).items()
        if k
        in (
            "seed",
            "images",
            "steps",
            "batch_size",
            "instance_weight",
            "instance_temperature",
            "attribute_weight",
            "probe_steps",
            "lr",
            "init_from",
        )
        and v != getattr(default, k)
    ]
    flags += [f"--{k.replace('_', '-')}" for k in (*PAIRINGS, "augment") if getattr(settings, k)]
    if tuple(settings.attribute_mix) != default.attribute_mix:
        flags.append(f"--attribute-mix {format_attribute_mix(settings.attribute_mix)}")
    return " ".join(["curate train-clip --output curation/models/assets/" + settings.arch, *flags])


def earlier_commands(init_from: str | None) -> list[str]:
    """The commands that trained the CLIP an `--init-from` run starts from, first first (from its metrics.json)."""
    metrics_file = Path(init_from) / "metrics.json" if init_from else None
    if metrics_file is None or not metrics_file.is_file():
        return []
    earlier = json.loads(metrics_file.read_text())
    settings = TrainSettings(**{**earlier["settings"], "attribute_mix": tuple(earlier["settings"]["attribute_mix"])})
    return [*earlier["metrics"].get("earlier_commands", []), training_command(settings)]


def model_card(settings: TrainSettings, metrics: dict) -> str:
    heads = metrics.get("heads", {})
    head_rows = "\n".join(
        f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['auc']:.4f} |" for name, m in heads.items()
    )
    default = TrainSettings()
    augmentation = "random mirroring, upside-down flips and reframing" if settings.augment else "random flips"
    if settings.siblings:
        augmentation += " (scenes in pairs one attribute apart, batched together)"
    if settings.lookalikes:
        augmentation += (
            " (scenes in pairs of the same colours and texture, another shape or count and layout, batched together)"
        )
    if settings.shape_siblings:
        augmentation += " (scenes in pairs: half the same scene with another shape, half lookalikes, batched together)"
    if settings.instance_weight:
        augmentation += f"; an image-to-image contrastive term (weight {settings.instance_weight})"
    if settings.attribute_weight:
        augmentation += (
            f"; linear probes of each scene attribute on the image embedding (weight {settings.attribute_weight}"
        )
        if tuple(settings.attribute_mix) != default.attribute_mix:
            augmentation += f", mixed {format_attribute_mix(settings.attribute_mix)}"
        augmentation += ")"
    return f"""# {settings.arch} (builtin)

A tiny open_clip CLIP trained from scratch on the project's synthetic world, so the pipeline runs with
nothing downloaded. It knows rendered shapes, colours, counts, textures and backgrounds — nothing else.
Use real weights (`model.pretrained: <tag or .safetensors path>`) for real data.

- Architecture: `{settings.arch}` (curation/models/configs/{settings.arch}.json): ViT image tower{" with a convolutional stem (curation/models/towers.py)" if settings.arch in CONV_STEMS else ""}
  ({model_image_size(settings.arch)} px), text transformer with open_clip's bundled tokenizer; weights stored as fp16 safetensors
  ({metrics["weights_bytes"] / 1e6:.1f} MB).
- Data: {settings.images} synthetic scenes rendered from seed {settings.seed} (JPEG, decoded by the pipeline's
  decode path), {int(TRAIN_MIX[1] * 100)} % each with the unsafe motif, a watermark or low aesthetics (captions
  mention it 80 % of the time); fresh templated captions and {augmentation} every step.
- Training: {f"continued from the CLIP in {Path(settings.init_from).name}/ (trained as the commands before the last one below say), " if settings.init_from else ""}{f"{settings.probe_steps} steps of the image tower with the attribute probes alone, then " if settings.probe_steps else ""}{settings.steps} steps of batch {settings.batch_size}, AdamW lr {settings.lr}, warmup {settings.warmup}
  + cosine, {"bf16 autocast" if settings.bf16 else "fp32"}, {settings.threads} CPU threads: {metrics["train_s"]:.0f} s of
  training, {metrics["total_s"]:.0f} s in all (rendering, heads, evaluation).
- Command{"s, in turn" if metrics.get("earlier_commands") else ""}: {"; then ".join(f"`{c}`" for c in [*metrics.get("earlier_commands", []), training_command(settings)])}.

## Metrics (held-out pairs from seed {settings.eval_seed}, never seen in training)

- Image->text retrieval R@1 among 100 candidates: **{metrics["retrieval_r1_100"]:.3f}** ({metrics["retrieval_pairs"]} pairs)
- Aligned vs swapped captions (shape and colour differ), ROC AUC: {metrics["swapped_caption_auc"]:.4f}
  (aligned clip_score 1st percentile {metrics["aligned_score_p01"]:.3f}, swapped 99th percentile {metrics["swapped_score_p99"]:.3f})

## Heads (heads/*.safetensors)

MLP heads (64 hidden units) over the image embedding, mean- and max-pooled patch tokens and spatial
statistics of the patch embedding (stem), all from the same forward pass, trained on {settings.head_images} labelled images ({round(100 * (1 - HEAD_MIX[0]))} % with one of the defects);
held-out figures at threshold 0.5 (for `aesthetic`, the defect is a score below 0.5):

| head | precision | recall | AUC |
|---|---|---|---|
{head_rows}
"""
