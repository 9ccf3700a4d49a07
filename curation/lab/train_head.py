"""`curate train-head`: fit a classifier head from labelled Parquet with the configured CLIP.

The images go through the pipeline's decode path and one forward pass of the model (embedding plus,
for ViT towers, pooled patch tokens) — the features the pipeline's `EmbedStage` hands to heads — and a
small MLP learns the label. 20 % of the rows are held out to report precision and recall at 0.5.
Labels come from a column (bool, 0/1, or strings compared with `positive`) or a synthetic world's
truth.json (rows keyed `<shard>/<key>`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from curation.config import ModelConfig
from curation.errors import UserError
from curation.io.readers import image_values
from curation.models.clip import load_clip, model_info, prepare_images
from curation.models.heads import FEATURE_KINDS, HeadTraining, encode_image_features, fit_head, metrics_at

IMAGE_COLUMNS = ("image", "jpg")


@dataclass(frozen=True, kw_only=True)
class HeadData:
    paths: tuple[str, ...]
    label_column: str | None = None
    truth_path: str | None = None
    positive: str = "1"
    negate: bool = False  # the head scores the absence of `positive` (aesthetic = not low_aesthetic)


def read_labelled(data: HeadData) -> tuple[list[bytes], np.ndarray]:
    """Image bytes and 0/1 labels from the Parquet files (folders are searched for *.parquet)."""
    if (data.label_column is None) == (data.truth_path is None):
        raise UserError("train-head: give exactly one of --label-column and --truth")
    files: list[Path] = []
    for raw in data.paths:
        path = Path(raw)
        files += sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    truth = json.loads(Path(data.truth_path).read_text())["labels"] if data.truth_path else None
    images: list[bytes] = []
    labels: list[int] = []
    for file in files:
        table = pq.read_table(file)
        column = next((c for c in IMAGE_COLUMNS if c in table.column_names), None)
        if column is None:
            continue  # img2dataset's metadata Parquet beside webdataset tars: no images
        if truth is not None:
            shard = file.stem
            values = [truth.get(f"{shard}/{k}") for k in table.column("key").to_pylist()]
        else:
            if data.label_column not in table.column_names:
                raise UserError(
                    f"{file} has no column {data.label_column!r}: pass --label-column with one of {table.column_names}"
                )
            values = table.column(data.label_column).to_pylist()
        for image, value in zip(image_values(table.column(column)).to_pylist(), values):
            if image is None or value is None:
                continue
            positive = _is_positive(value, data.positive)
            images.append(image)
            labels.append(int(positive != data.negate))
    if not images:
        raise UserError(
            f"no labelled images found in {', '.join(data.paths)}: Parquet with an image or jpg column is needed"
        )
    return images, np.array(labels, np.float32)


def _is_positive(value, positive: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value >= 0.5
    return str(value) == positive


@torch.inference_mode()
def head_features(images: list[bytes], model_cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Feature vectors of the decodable images (and their indices), as the pipeline's heads see them."""
    from curation.stages.decode import DecodedImage, decode_image

    info = model_info(model_cfg)
    clip = load_clip(model_cfg)
    tokens = getattr(clip.model.visual, "output_tokens", None) is not None
    kinds = FEATURE_KINDS if tokens else ("embedding",)
    keep, pixels = [], []
    for i, data in enumerate(images):
        decoded = decode_image(data, size=info.image_size, max_pixels=89_478_485)
        if isinstance(decoded, DecodedImage):
            keep.append(i)
            pixels.append(decoded.pixels)
    out = []
    step = model_cfg.batch_size
    for start in range(0, len(pixels), step):
        chunk = np.frombuffer(b"".join(pixels[start : start + step]), np.uint8).reshape(
            -1, info.image_size, info.image_size, 3
        )
        batch = prepare_images(torch.from_numpy(chunk.copy()).to(clip.device), clip.mean, clip.std)
        out.append(encode_image_features(clip.model, batch, tokens=tokens).vector(kinds).cpu().numpy())
    return np.concatenate(out), np.array(keep), kinds


def train_head_from_parquet(
    name: str, data: HeadData, model_cfg: ModelConfig, output: str | Path, log: Callable[[str], None] = print
) -> dict:
    torch.set_num_threads(model_cfg.threads)
    images, labels = read_labelled(data)
    log(f"{len(images)} labelled images, {int(labels.sum())} positive; embedding with {model_cfg.arch} ...")
    features, keep, kinds = head_features(images, model_cfg)
    labels = labels[keep]
    holdout = np.random.default_rng(0).random(len(labels)) < 0.2
    if labels[~holdout].min() == labels[~holdout].max():
        raise UserError("train-head: the labels hold one class only: check --positive / --label-column")
    head = fit_head(features[~holdout], labels[~holdout], HeadTraining(features=kinds))
    with torch.no_grad():
        logits = head.logits(torch.from_numpy(features[holdout]))
    scores = torch.sigmoid(logits).numpy()
    report = metrics_at(scores, labels[holdout].astype(int), 0.5)
    head.save(
        Path(output),
        name=name,
        arch=model_cfg.arch,
        model_id=model_info(model_cfg).model_id,
        positive=("not " if data.negate else "") + data.positive,
    )
    return report
