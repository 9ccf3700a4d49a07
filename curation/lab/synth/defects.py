"""Planted defects: each planter turns some clean rows of a draft world into one defect kind.

A planter takes the rows it changes from the draft's clean pool, so a row carries at most one defect
kind. Originals of duplicate groups stay clean but are reserved, so no later planter touches them.
Add a kind by writing a planter (usually a `RowDefect` with one `apply` method) and listing it in
`DEFAULT_PLANTERS`; the others stay as they are.
"""

from __future__ import annotations

import io
import json
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from PIL import Image

from curation.lab.synth.effects import (
    LOW_AESTHETIC_VARIANTS,
    UNSAFE_CUES,
    WATERMARK_CUES,
    WATERMARK_STYLES,
    degrade,
    draw_unsafe_motif,
    overlay_watermark,
    with_cue,
)
from curation.lab.synth.languages import LANGUAGES, translated_caption
from curation.lab.synth.personal import personal_snippet
from curation.lab.synth.world import Scene, decode, encode_jpeg, sample_size

CLEAN = "clean"


@dataclass(kw_only=True)
class Row:
    """One sample of the world before it is written: its scene, caption and (once made) payload."""

    index: int
    scene: Scene
    caption: str
    size: tuple[int, int]  # (width, height) to render at
    label: str = CLEAN
    reserved: bool = False  # clean, but other rows are derived from it (a duplicate group's original)
    payload: bytes | None = None
    image_size: tuple[int, int] | None = None  # the payload's own (width, height); None if it is broken


@dataclass(frozen=True, kw_only=True)
class DuplicateGroup:
    kind: str  # "exact" | "near" | "semantic"
    variant: str | None
    original: int
    copies: tuple[int, ...]


@dataclass(kw_only=True)
class Draft:
    """The rows being planted, plus the truth that is not a per-row label."""

    rows: list[Row]
    duplicate_groups: list[DuplicateGroup] = field(default_factory=list)
    misaligned_pairs: list[tuple[int, int]] = field(default_factory=list)

    def clean_pool(self, rng: np.random.Generator) -> CleanPool:
        """The rows a planter may change (clean, not reserved), in random order."""
        order = rng.permutation(len(self.rows))
        return CleanPool([self.rows[i] for i in order if self.rows[i].label == CLEAN and not self.rows[i].reserved])

    def payload(self, row: Row) -> bytes:
        """The row's bytes, rendering its scene as a JPEG the first time."""
        if row.payload is None:
            row.payload = encode_jpeg(row.scene.render(*row.size))
            row.image_size = row.size
        return row.payload


class CleanPool:
    """Rows in random order; `take` removes them from the end, so a row is handed out once."""

    def __init__(self, rows: list[Row]):
        self._rows = rows

    def take(self, count: int, where: Callable[[Row], bool] | None = None) -> list[Row]:
        """Up to `count` rows (that satisfy `where`); fewer when the pool runs out."""
        taken: list[Row] = []
        position = len(self._rows) - 1
        while len(taken) < count and position >= 0:
            if where is None or where(self._rows[position]):
                taken.append(self._rows.pop(position))
            position -= 1
        return taken

    def put_back(self, row: Row) -> None:
        """Return a row just taken; the next `take` hands it out first."""
        self._rows.append(row)


def planter_rng(seed: int, kind: str) -> np.random.Generator:
    """Each planter draws from its own stream, derived from the seed and its kind."""
    return np.random.default_rng([seed, zlib.crc32(kind.encode())])


def plant(draft: Draft, planters: tuple[Planter, ...], seed: int) -> None:
    for planter in planters:
        planter.plant(draft, planter_rng(seed, planter.kind))


@dataclass(kw_only=True)
class Planter(ABC):
    kind: ClassVar[str]
    fraction: float  # of all rows that get this label

    def budget(self, rows: int) -> int:
        return int(self.fraction * rows + 0.5)

    @abstractmethod
    def plant(self, draft: Draft, rng: np.random.Generator) -> None: ...


@dataclass(kw_only=True)
class RowDefect(Planter):
    """A defect of one row on its own: the base picks the rows, a subclass only changes one."""

    def plant(self, draft: Draft, rng: np.random.Generator) -> None:
        for row in draft.clean_pool(rng).take(self.budget(len(draft.rows))):
            self.apply(row, draft, rng)
            row.label = self.kind

    @abstractmethod
    def apply(self, row: Row, draft: Draft, rng: np.random.Generator) -> None: ...


@dataclass(kw_only=True)
class TruncatedJpeg(RowDefect):
    kind: ClassVar[str] = "truncated_jpeg"
    fraction: float = 0.01
    keep: tuple[float, float] = (0.3, 0.7)

    def apply(self, row: Row, draft: Draft, rng: np.random.Generator) -> None:
        data = draft.payload(row)
        row.payload = data[: int(len(data) * rng.uniform(*self.keep))]
        row.image_size = None


@dataclass(kw_only=True)
class NotAnImage(RowDefect):
    """Bytes a server may send instead of an image (an error page, JSON, garbage) named as a .jpg."""

    kind: ClassVar[str] = "not_an_image"
    fraction: float = 0.01

    def apply(self, row: Row, draft: Draft, rng: np.random.Generator) -> None:
        makers = (_html_page, _json_error, _random_bytes)
        row.payload = makers[int(rng.integers(len(makers)))](rng)
        row.image_size = None


@dataclass(kw_only=True)
class Tiny(RowDefect):
    kind: ClassVar[str] = "tiny"
    fraction: float = 0.01
    short_side: tuple[int, int] = (12, 20)

    def apply(self, row: Row, draft: Draft, rng: np.random.Generator) -> None:
        row.size = sample_size(rng, short_side=self.short_side)
        draft.payload(row)


@dataclass(kw_only=True)
class ExtremeAspect(RowDefect):
    kind: ClassVar[str] = "extreme_aspect"
    fraction: float = 0.01
    short_side: tuple[int, int] = (64, 96)
    aspect: tuple[float, float] = (4.0, 6.0)

    def apply(self, row: Row, draft: Draft, rng: np.random.Generator) -> None:
        row.size = sample_size(rng, short_side=self.short_side, aspect=self.aspect)
        draft.payload(row)


@dataclass(kw_only=True)
class ImageDefect(RowDefect):
    """A defect drawn over the row's rendered scene; some captions give it away (web alt-text cues)."""

    cue_rate: ClassVar[float] = 0.0
    cues: ClassVar[tuple[str, ...]] = ()

    def apply(self, row: Row, draft: Draft, rng: np.random.Generator) -> None:
        image = self.draw(row.scene.render(*row.size), rng, row.index)
        row.payload = encode_jpeg(image)
        row.image_size = image.size
        if self.cues and rng.random() < self.cue_rate:
            row.caption = with_cue(row.caption, self.cues, rng)

    @abstractmethod
    def draw(self, image: Image.Image, rng: np.random.Generator, index: int) -> Image.Image: ...


@dataclass(kw_only=True)
class Unsafe(ImageDefect):
    """The designated unsafe motif (a magenta/black hazard target) over the scene: the world's NSFW."""

    kind: ClassVar[str] = "unsafe"
    cue_rate: ClassVar[float] = 0.2
    cues: ClassVar[tuple[str, ...]] = UNSAFE_CUES
    fraction: float = 0.03

    def draw(self, image: Image.Image, rng: np.random.Generator, index: int) -> Image.Image:
        return draw_unsafe_motif(image, rng)


@dataclass(kw_only=True)
class Watermark(ImageDefect):
    """Semi-opaque text over the image, tiled or as a centred banner (both styles show up)."""

    kind: ClassVar[str] = "watermark"
    cue_rate: ClassVar[float] = 0.3
    cues: ClassVar[tuple[str, ...]] = WATERMARK_CUES
    fraction: float = 0.03

    def draw(self, image: Image.Image, rng: np.random.Generator, index: int) -> Image.Image:
        return overlay_watermark(image, rng, style=WATERMARK_STYLES[index % len(WATERMARK_STYLES)])


@dataclass(kw_only=True)
class LowAesthetic(ImageDefect):
    """Strong blur, heavy noise or washed-out contrast (all variants show up)."""

    kind: ClassVar[str] = "low_aesthetic"
    fraction: float = 0.02

    def draw(self, image: Image.Image, rng: np.random.Generator, index: int) -> Image.Image:
        return degrade(image, rng, variant=LOW_AESTHETIC_VARIANTS[index % len(LOW_AESTHETIC_VARIANTS)])


@dataclass(kw_only=True)
class Misaligned(Planter):
    """Pairs of rows whose scenes differ in shape and colour swap their captions."""

    kind: ClassVar[str] = "misaligned"
    fraction: float = 0.04

    def plant(self, draft: Draft, rng: np.random.Generator) -> None:
        pool = draft.clean_pool(rng)
        for _ in range(self.budget(len(draft.rows)) // 2):
            first = pool.take(1)
            if not first:
                return
            a = first[0]
            partner = pool.take(1, where=lambda r: r.scene.shape != a.scene.shape and r.scene.colour != a.scene.colour)
            if not partner:
                return
            b = partner[0]
            a.caption, b.caption = b.caption, a.caption
            a.label = b.label = self.kind
            draft.misaligned_pairs.append((a.index, b.index))


@dataclass(kw_only=True)
class DuplicateGroups(Planter):
    """Groups of an untouched original and 1-2 copies of its scene, each copy with its own caption."""

    group_kind: ClassVar[str]
    variants: ClassVar[tuple[str | None, ...]]
    copies_per_group: tuple[int, int] = (1, 2)
    tries: int = 8  # originals tried per group when `accepts` turns copies down

    def accepts(self, source: bytes, copies: list[bytes]) -> bool:
        """Whether these copies of `source` make a group of this kind (all do, unless a kind says not)."""
        return True

    def plant(self, draft: Draft, rng: np.random.Generator) -> None:
        budget = self.budget(len(draft.rows))
        pool = draft.clean_pool(rng)
        turn = int(rng.integers(len(self.variants)))  # then round-robin, so every variant shows up
        while budget > 0:
            low, high = self.copies_per_group
            wanted = min(budget, int(rng.integers(low, high + 1)))
            group = self._plant_group(draft, pool, rng, wanted, self.variants[turn % len(self.variants)])
            if group is None:  # no clean rows left
                return
            draft.duplicate_groups.append(group)
            budget -= len(group.copies)
            turn += 1

    def _plant_group(
        self, draft: Draft, pool: CleanPool, rng: np.random.Generator, wanted: int, variant: str | None
    ) -> DuplicateGroup | None:
        for _ in range(self.tries):
            originals = pool.take(1)
            copies = pool.take(wanted)
            if not originals or not copies:
                return None
            original = originals[0]
            original.reserved = True  # from here on it stays clean, also when its copies are not accepted
            source = draft.payload(original)
            made = [
                (_another_caption(original.scene, original.caption, rng), self.copy_payload(source, variant, rng))
                for _ in copies
            ]
            if self.accepts(source, [payload for _, payload in made]):
                break
            for copy in reversed(copies):
                pool.put_back(copy)
        else:
            return None
        for copy, (caption, payload) in zip(copies, made):
            copy.scene, copy.size, copy.caption, copy.payload = original.scene, original.size, caption, payload
            copy.image_size = decode(payload).size
            copy.label = self.kind
        return DuplicateGroup(
            kind=self.group_kind, variant=variant, original=original.index, copies=tuple(c.index for c in copies)
        )

    @abstractmethod
    def copy_payload(self, source: bytes, variant: str | None, rng: np.random.Generator) -> bytes: ...


@dataclass(kw_only=True)
class ExactDuplicates(DuplicateGroups):
    kind: ClassVar[str] = "exact_duplicate"
    group_kind: ClassVar[str] = "exact"
    variants: ClassVar[tuple[str | None, ...]] = (None,)
    fraction: float = 0.03

    def copy_payload(self, source: bytes, variant: str | None, rng: np.random.Generator) -> bytes:
        return source


@dataclass(kw_only=True)
class NearDuplicates(DuplicateGroups):
    """Copies that look the same but have other bytes: resized, recompressed or slightly cropped."""

    kind: ClassVar[str] = "near_duplicate"
    group_kind: ClassVar[str] = "near"
    variants: ClassVar[tuple[str | None, ...]] = ("resize", "recompress", "crop")
    fraction: float = 0.03
    scale: tuple[float, float] = (0.5, 0.8)
    quality: tuple[int, int] = (30, 50)
    crop: tuple[float, float] = (0.01, 0.03)  # of each side, drawn per side (phash stays within ~8 bits)

    def copy_payload(self, source: bytes, variant: str | None, rng: np.random.Generator) -> bytes:
        image = decode(source)
        width, height = image.size
        if variant == "resize":
            scale = rng.uniform(*self.scale)
            resized = image.resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR)
            return encode_jpeg(resized)
        if variant == "recompress":
            return encode_jpeg(image, quality=int(rng.integers(self.quality[0], self.quality[1] + 1)))
        left, top, right, bottom = rng.uniform(*self.crop, size=4)
        box = (round(width * left), round(height * top), width - round(width * right), height - round(height * bottom))
        return encode_jpeg(image.crop(box))


@dataclass(kw_only=True)
class SemanticDuplicates(DuplicateGroups):
    """Copies of the same scene that a perceptual hash cannot match: mirrored, flipped upside down, or
    mirrored and reframed (a 5-12 % crop per side), as re-uploads that dodge duplicate checks are. Only
    originals whose copy lands at least `min_phash_bits` from them are used, so the group is not also a
    near duplicate."""

    kind: ClassVar[str] = "semantic_duplicate"
    group_kind: ClassVar[str] = "semantic"
    variants: ClassVar[tuple[str | None, ...]] = ("mirror", "flip", "mirror_reframe")
    fraction: float = 0.03
    copies_per_group: tuple[int, int] = (1, 1)
    reframe: tuple[float, float] = (0.05, 0.12)
    min_phash_bits: int = 20

    def accepts(self, source: bytes, copies: list[bytes]) -> bool:
        return all(_phash_bits(source, copy) >= self.min_phash_bits for copy in copies)

    def copy_payload(self, source: bytes, variant: str | None, rng: np.random.Generator) -> bytes:
        image = decode(source)
        if variant == "flip":
            return encode_jpeg(image.transpose(Image.Transpose.FLIP_TOP_BOTTOM))
        mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if variant == "mirror":
            return encode_jpeg(mirrored)
        width, height = image.size
        left, top, right, bottom = rng.uniform(*self.reframe, size=4)
        box = (round(width * left), round(height * top), width - round(width * right), height - round(height * bottom))
        return encode_jpeg(mirrored.crop(box))


@dataclass(kw_only=True)
class NonEnglish(RowDefect):
    """The caption, still a correct description of the scene, in another language (German, French,
    Spanish, Italian, Portuguese, Dutch or Swedish, drawn per row): its language is the defect."""

    kind: ClassVar[str] = "non_english"
    fraction: float = 0.03
    languages: tuple[str, ...] = LANGUAGES

    def apply(self, row: Row, draft: Draft, rng: np.random.Generator) -> None:
        language = self.languages[int(rng.integers(len(self.languages)))]
        row.caption = translated_caption(row.scene, language, rng)


@dataclass(kw_only=True)
class PiiCaption(RowDefect):
    """A good caption with personal data appended (a contact e-mail, a phone number or a street address).
    The row is not rejected for it: the caption stage redacts it and lists the kind in `pii`, and
    `curate eval` scores what it found."""

    kind: ClassVar[str] = "pii_caption"
    fraction: float = 0.02

    def apply(self, row: Row, draft: Draft, rng: np.random.Generator) -> None:
        row.caption += personal_snippet(rng)[1]


def _phash_bits(a: bytes, b: bytes) -> int:
    """Hamming distance of the 64-bit perceptual hashes of two encoded images."""
    import imagehash

    return int(imagehash.phash(decode(a), hash_size=8) - imagehash.phash(decode(b), hash_size=8))


DEFAULT_PLANTERS: tuple[Planter, ...] = (
    ExactDuplicates(),
    NearDuplicates(),
    SemanticDuplicates(),
    Misaligned(),
    TruncatedJpeg(),
    NotAnImage(),
    Tiny(),
    ExtremeAspect(),
    Unsafe(),
    Watermark(),
    LowAesthetic(),
    NonEnglish(),  # last ones: they take their rows after every other planter, so theirs stay as they were
    PiiCaption(),
)
DEFECT_KINDS: tuple[str, ...] = tuple(p.kind for p in DEFAULT_PLANTERS)


def _another_caption(scene: Scene, avoid: str, rng: np.random.Generator, tries: int = 8) -> str:
    """A correct caption of the scene that differs from `avoid` where the templates allow it."""
    caption = scene.caption(rng)
    for _ in range(tries):
        if caption != avoid:
            break
        caption = scene.caption(rng)
    return caption


def _html_page(rng: np.random.Generator) -> bytes:
    code, reason = [(404, "Not Found"), (403, "Forbidden"), (503, "Service Unavailable")][int(rng.integers(3))]
    return (
        f"<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\n"
        f"<body><h1>{reason}</h1><p>The requested image is not available.</p></body></html>\n"
    ).encode()


def _json_error(rng: np.random.Generator) -> bytes:
    return json.dumps({"error": "rate limited", "retry_after": int(rng.integers(10, 600))}).encode()


def _random_bytes(rng: np.random.Generator) -> bytes:
    """Noise that no image decoder accepts (redrawn in the rare case one does)."""
    while True:
        data = rng.bytes(int(rng.integers(200, 4000)))
        try:
            Image.open(io.BytesIO(data))
        except Exception:  # noqa: BLE001 - any refusal is what we want
            return data
