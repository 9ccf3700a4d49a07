"""What the built-in model knows: the images it was trained on, and the rows that fall outside them.

The shipped tiny CLIP and its heads learnt a synthetic world of drawn shapes; on photographs their
scores mean nothing, and a head trained to find drawn watermarks would reject a photo as `watermark`
for no reason. So the model ships, beside its weights, `domain.json` (`curate fit-domain` in the lab
writes it from the synthetic world): the vocabulary of the captions it was trained on, the k-means
centroids of its training images' embeddings and the largest cosine distance to the nearest centroid
that those images reach, times a margin. A row is outside the domain when under `min_coverage` of its
caption's words are words the model ever saw, or its image embeds farther than that from every
centroid. The caption carries most of the weight: measured on scikit-image's photographs, the tiny
model embeds photos as close to its centroids as its own images (its features know shapes, colours and
textures, and nothing else to tell a photo by), while their captions share few words with the world's
(docs/models.md). A row outside the domain is marked by the embedding stage
(`OUTSIDE_COLUMN`, a working column, never stored), the built-in heads abstain on it (their score is
written, no row is rejected by them), the job says so in one line early in the score phase, and the
report shows a banner. Only the built-in model has a domain: open_clip weights trained on the web
know photographs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DOMAIN_FILE = "domain.json"
OUTSIDE_COLUMN = "_outside_domain"  # bool, set by the embedding stage where the model has a domain


WORD = re.compile(r"[^\W\d_]+")


def caption_words(caption: str | None) -> list[str]:
    return WORD.findall((caption or "").lower())


@dataclass(frozen=True)
class Domain:
    centroids: np.ndarray  # (k, D) float32, L2-normalised
    max_distance: float  # cosine distance to the nearest centroid beyond which an image is outside
    vocabulary: frozenset[str]  # the words of the captions the model was trained on
    min_coverage: float  # below this fraction of known words a caption is outside
    about: dict  # how it was fitted: images, quantile, margin, world

    def coverage(self, captions: list[str | None]) -> np.ndarray:
        """The fraction of each caption's words that the model saw in training (1 for no words)."""
        words = [caption_words(c) for c in captions]
        return np.array([sum(w in self.vocabulary for w in ws) / len(ws) if ws else 1.0 for ws in words])

    def outside_rows(self, embeddings: np.ndarray, captions: list[str | None]) -> np.ndarray:
        """Per row: outside the domain, by its caption's words or its image embedding."""
        return (self.coverage(captions) < self.min_coverage) | self.outside(embeddings)

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        """Cosine distance of each (L2-normalised) embedding to its nearest centroid."""
        if not len(embeddings):
            return np.zeros(0, np.float32)
        return 1.0 - (np.asarray(embeddings, np.float32) @ self.centroids.T).max(axis=1)

    def outside(self, embeddings: np.ndarray) -> np.ndarray:
        return self.distances(embeddings) > self.max_distance

    def to_json(self) -> str:
        data = {
            "max_distance": self.max_distance,
            "min_coverage": self.min_coverage,
            "vocabulary": sorted(self.vocabulary),
            "about": self.about,
            "centroids": np.round(self.centroids.astype(np.float64), 6).tolist(),
        }
        return json.dumps(data, indent=1)

    @classmethod
    def read(cls, path: str | Path) -> "Domain | None":
        path = Path(path)
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        centroids = np.asarray(data["centroids"], np.float32)
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        return cls(
            centroids=centroids,
            max_distance=float(data["max_distance"]),
            vocabulary=frozenset(data["vocabulary"]),
            min_coverage=float(data["min_coverage"]),
            about=data.get("about", {}),
        )


def builtin_domain(arch: str) -> Domain | None:
    """The domain shipped with the built-in model of `arch`, or None."""
    from curation.models.files import ASSETS_DIR

    return Domain.read(ASSETS_DIR / arch / DOMAIN_FILE)


def outside_domain_rows(table: pa.Table) -> int:
    """Rows of `table` the embedding stage marked outside the model's domain."""
    if OUTSIDE_COLUMN not in table.column_names:
        return 0
    return int(pc.sum(pc.cast(pc.fill_null(table.column(OUTSIDE_COLUMN), False), pa.int64())).as_py() or 0)


def warning_line(outside: int, scored: int) -> str:
    return (
        f"warning: {outside} of {scored} images scored so far are unlike anything the built-in model was trained "
        "on (its synthetic world of drawn shapes): its heads abstain on them (scores written, no rejection) and its "
        "clip_score means little there; for real photos use pipelines/basic.yaml or real open_clip weights "
        "(docs/models.md)"
    )


class DomainTally:
    """On the driver: counts the rows outside the domain as shards are scored, and says so once."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.outside, self.scored, self.warned = log, 0, 0, False

    def observe(self, rows: int, outside: int) -> None:
        self.scored += rows
        self.outside += outside
        if self.outside and not self.warned:
            self.warned = True
            self.log(warning_line(self.outside, self.scored))

    def summary(self) -> dict:
        return {"outside_rows": self.outside, "scored_rows": self.scored}
