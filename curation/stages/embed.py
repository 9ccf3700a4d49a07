"""Embed images and captions with CLIP in one pass; clip_score is their cosine similarity.

Runs on an actor (GPU when the model config asks for one, CPU otherwise): the model loads once in
`setup`, pixels arrive already decoded and resized by the decode stage, and are normalised on the
device. Only rows still kept are embedded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa
import torch

from curation.config import ModelConfig
from curation.models.clip import LoadedClip, load_clip
from curation.schema import Stage, embedding_type
from curation.stages.base import BatchStage, kept_mask, set_column


@dataclass(kw_only=True)
class EmbedStage(BatchStage):
    name: ClassVar[Stage] = Stage.EMBED
    model: ModelConfig
    image_size: int
    embed_dim: int
    _clip: LoadedClip | None = field(default=None, init=False, repr=False)

    def setup(self) -> None:
        if self._clip is not None:
            return
        logging.getLogger().setLevel(logging.ERROR)  # open_clip warns at INFO/WARNING on random init
        torch.set_num_threads(self.model.threads)
        self._clip = load_clip(self.model)

    def process_batch(self, table: pa.Table) -> pa.Table:
        self.setup()
        n = table.num_rows
        img_emb: list = [None] * n
        txt_emb: list = [None] * n
        scores: list = [None] * n
        rows = np.flatnonzero(kept_mask(table) & table.column("pixels").is_valid().to_numpy(zero_copy_only=False))
        if len(rows):
            pixels = table.column("pixels").take(rows).to_pylist()
            captions = table.column("caption").take(rows).to_pylist()
            image, text = self.embed(pixels, captions)
            cosine = (image * text).sum(axis=1)
            image16, text16 = image.astype(np.float16), text.astype(np.float16)
            for j, i in enumerate(rows):
                img_emb[i], txt_emb[i], scores[i] = image16[j], text16[j], float(cosine[j])
        emb_type = embedding_type(self.embed_dim)
        table = set_column(table, "img_emb", _embedding_array(img_emb, emb_type))
        table = set_column(table, "txt_emb", _embedding_array(txt_emb, emb_type))
        table = set_column(table, "clip_score", scores, pa.float32())
        return table.drop_columns(["pixels"])

    @torch.inference_mode()
    def embed(self, pixels: list[bytes], captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """L2-normalised image and text embeddings (float32), in micro-batches of model.batch_size."""
        clip = self._clip
        size, step = self.image_size, self.model.batch_size
        images, texts = [], []
        for start in range(0, len(pixels), step):
            chunk = np.frombuffer(b"".join(pixels[start : start + step]), dtype=np.uint8)
            batch = torch.from_numpy(chunk.reshape(-1, size, size, 3))
            if clip.device.type == "cuda":
                batch = batch.pin_memory()
            batch = batch.to(clip.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
            batch = (batch - clip.mean) / clip.std
            tokens = clip.tokenizer(captions[start : start + step]).to(clip.device, non_blocking=True)
            with torch.autocast(clip.device.type, dtype=clip.amp_dtype, enabled=clip.amp_dtype is not None):
                image_features = clip.model.encode_image(batch)
                text_features = clip.model.encode_text(tokens)
            images.append(torch.nn.functional.normalize(image_features.float(), dim=-1).cpu().numpy())
            texts.append(torch.nn.functional.normalize(text_features.float(), dim=-1).cpu().numpy())
        return np.concatenate(images), np.concatenate(texts)


def _embedding_array(rows: list, type_: pa.ListType) -> pa.Array:
    dim = type_.list_size
    valid = np.array([r is not None for r in rows], dtype=bool)
    flat = np.zeros((len(rows), dim), dtype=np.float16)
    if valid.any():
        flat[valid] = np.stack([r for r in rows if r is not None])
    values = pa.array(flat.reshape(-1), type=pa.float16())
    mask = pa.array(~valid)
    return pa.FixedSizeListArray.from_arrays(values, type=type_, mask=mask)
