"""Embed images and captions with CLIP in one pass; clip_score is their cosine similarity.

Runs on an actor (GPU when the model config asks for one, CPU otherwise): the model and the heads load
once in `setup`, pixels arrive already decoded and resized by the decode stage, and are normalised on
the device. Only rows still kept are embedded. The classifier heads (unsafe, watermark, aesthetic, ...)
read the same forward pass — the embedding and, for ViT towers, its patch tokens — so every score comes
from one embedding of each image; `HeadsFilter` then applies their thresholds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pyarrow as pa

from curation.config import HeadConfig, ModelConfig
from curation.domain import OUTSIDE_COLUMN, Domain
from curation.schema import Stage, embedding_type
from curation.stages.base import BatchStage, binary_views, kept_mask, set_column

if TYPE_CHECKING:
    from curation.models.clip import LoadedClip
    from curation.models.heads import ImageFeatureEncoder

# torch and open_clip are imported by the workers that embed (in setup), not by the driver that builds
# the plan: importing them takes seconds.


@dataclass(kw_only=True)
class EmbedStage(BatchStage):
    name: ClassVar[Stage] = Stage.EMBED
    model: ModelConfig
    image_size: int
    embed_dim: int
    heads: tuple[HeadConfig, ...] = ()
    torch_threads: int | None = None  # None: model.threads (the runner gives each concurrent call its share)
    domain: Domain | None = None  # the built-in model's domain: rows outside it are marked (curation/domain.py)
    _clip: LoadedClip | None = field(default=None, init=False, repr=False)
    _heads: dict = field(default_factory=dict, init=False, repr=False)  # score column -> module
    _encoder: ImageFeatureEncoder | None = field(default=None, init=False, repr=False)

    def setup(self) -> None:
        if self._clip is not None:
            return
        import torch

        from curation.models.clip import load_clip
        from curation.models.heads import ImageFeatureEncoder, load_pipeline_heads

        logging.getLogger().setLevel(logging.ERROR)  # open_clip warns at INFO/WARNING on random init
        torch.set_num_threads(self.torch_threads or self.model.threads)
        clip = load_clip(self.model)
        self._heads = load_pipeline_heads(self.heads, self.model, clip)
        tokens = any({"tokens", "stem"} & set(head.features) for head in self._heads.values())
        self._encoder = ImageFeatureEncoder(clip.model, tokens=tokens)
        self._clip = clip  # last: a stage with _clip set is ready

    def process_batch(self, table: pa.Table) -> pa.Table:
        self.setup()
        n = table.num_rows
        img_emb: list = [None] * n
        txt_emb: list = [None] * n
        scores: list = [None] * n
        head_scores: dict[str, list] = {column: [None] * n for column in self._heads}
        rows = np.flatnonzero(kept_mask(table) & table.column("pixels").is_valid().to_numpy(zero_copy_only=False))
        if len(rows):
            pixels = table.column("pixels").take(rows)
            captions = table.column("caption").take(rows).to_pylist()
            image, text, heads = self.embed(pixels, captions)
            cosine = (image * text).sum(axis=1)
            image16, text16 = image.astype(np.float16), text.astype(np.float16)
            for j, i in enumerate(rows):
                img_emb[i], txt_emb[i], scores[i] = image16[j], text16[j], float(cosine[j])
                for column, values in heads.items():
                    head_scores[column][i] = float(values[j])
        emb_type = embedding_type(self.embed_dim)
        table = set_column(table, "img_emb", _embedding_array(img_emb, emb_type))
        table = set_column(table, "txt_emb", _embedding_array(txt_emb, emb_type))
        table = set_column(table, "clip_score", scores, pa.float32())
        for column, values in head_scores.items():
            table = set_column(table, column, values, pa.float32())
        if self.domain is not None:
            outside = np.zeros(n, dtype=bool)
            if len(rows):
                outside[rows] = self.domain.outside_rows(image, captions)
            table = set_column(table, OUTSIDE_COLUMN, pa.array(outside))
        return table.drop_columns(["pixels"])

    def embed(
        self, pixels: pa.Array | pa.ChunkedArray, captions: list[str]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """L2-normalised image and text embeddings (float32) and each head's scores, in micro-batches,
        of `pixels` (one value per image, as the decode stage makes them) and their captions."""
        import torch

        with torch.inference_mode():
            return self._embed(torch, pixels, captions)

    def _embed(self, torch, pixels, captions: list[str]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        from curation.models.clip import prepare_images

        clip = self._clip
        size, step = self.image_size, self.model.batch_size
        images, texts = [], []
        heads: dict[str, list[np.ndarray]] = {column: [] for column in self._heads}
        ends, data = binary_views(pixels)
        flat = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
        for start in range(0, len(pixels), step):
            stop = min(len(pixels), start + step)
            # One copy, from the Arrow column into memory the tensor owns (pinned for an asynchronous
            # copy to the GPU): no Python bytes per image, no joined batch.
            batch = torch.empty((stop - start, size, size, 3), dtype=torch.uint8, pin_memory=clip.device.type == "cuda")
            batch.numpy().reshape(-1)[:] = flat[ends[start] : ends[stop]]
            batch = prepare_images(batch.to(clip.device, non_blocking=True), clip.mean, clip.std)
            tokens = clip.tokenizer(captions[start : start + step]).to(clip.device, non_blocking=True)
            with torch.autocast(clip.device.type, dtype=clip.amp_dtype, enabled=clip.amp_dtype is not None):
                features = self._encoder(batch)
                text_features = clip.model.encode_text(tokens)
            images.append(features.embedding.cpu().numpy())
            texts.append(torch.nn.functional.normalize(text_features.float(), dim=-1).cpu().numpy())
            for column, head in self._heads.items():
                heads[column].append(head(features).float().cpu().numpy())
        return (
            np.concatenate(images),
            np.concatenate(texts),
            {column: np.concatenate(values) for column, values in heads.items()},
        )


def _embedding_array(rows: list, type_: pa.ListType) -> pa.Array:
    dim = type_.list_size
    valid = np.array([r is not None for r in rows], dtype=bool)
    flat = np.zeros((len(rows), dim), dtype=np.float16)
    if valid.any():
        flat[valid] = np.stack([r for r in rows if r is not None])
    values = pa.array(flat.reshape(-1), type=pa.float16())
    mask = pa.array(~valid)
    return pa.FixedSizeListArray.from_arrays(values, type=type_, mask=mask)
