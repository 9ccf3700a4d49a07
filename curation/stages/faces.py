"""Faces in kept images (privacy.faces): found with OpenCV's bundled Haar cascades, then blurred in the
image bytes (`blur`), or the row rejected with reason `faces` (`reject`); `off` looks at nothing.

Only rows still kept with image bytes are examined; `faces` holds the count found there (0: none) and is
null on every other row (rejected earlier, no bytes, or bytes that do not open: the decode stage has
already rejected those, so they are left as they are). Nothing is downloaded: the cascade files ship
inside opencv-python-headless (`cv2.data.haarcascades`).

Detection works on a small greyscale copy: the bytes are opened as decode.py opens them (the same
formats, a pixel limit checked before any pixel is decoded), JPEGs decoded at reduced scale straight to
greyscale (draft mode), the EXIF orientation applied, and the long side reduced to at most
`ANALYSIS_SIDE`; `min_face_px` is a face side in pixels of that copy. One cascade (alt2) finds candidate
boxes; a candidate counts as a face only if two other cascades (alt and default) each find a face of
about its size around it, and its grey levels are continuous. Haar features respond to a dark-light
layout (eyes and brows darker than cheeks) that flat drawings reproduce too, e.g. a disc with a 2x2 grid
of dots: one cascade alone fires on a few in every thousand synthetic scenes, the three together on
about two in a thousand, and those are a few flat tones with an empty gap between them, where the
shading of skin has none (`TONE_GAP`; measured by curation/lab/bench/faces.py).

Blurring works on the full-resolution upright image: each face box, widened by `MARGIN` on every side,
is reduced to about `CELLS` cells across the face and smoothed back up, which leaves no feature to
recognise. The image is re-encoded in its own format (JPEG at quality 92, PNG as PNG, WebP as WebP,
anything else as JPEG) with its ICC profile and no other metadata: the pixels are upright now, so the
EXIF orientation (and with it GPS and camera data) goes. Animated images keep their first frame only;
16-bit and float images become 8-bit. Images without a face keep their bytes exactly.

`sha256`, `width` and `height` are not changed. `sha256` stays the hash of the source bytes: it is the
source image's identity for exact dedup, within a run and against earlier refreshes, and must not
depend on this stage or on the encoder. `width`/`height` are the upright size, which is also the size of
the blurred image. A face that cannot be blurred (the full-size decode fails) is never kept unblurred:
the row is rejected with reason `faces`.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import cv2
import numpy as np
import pyarrow as pa
from PIL import Image

from curation.images import FORMATS, orientation, to_rgb, upright
from curation.schema import RejectReason, Stage
from curation.stages.base import BatchStage, apply_rejections, kept_mask, set_column
from curation.stages.release import mark_bytes_rewritten

FaceMode = Literal["blur", "reject", "off"]
FACE_MODES: tuple[str, ...] = ("blur", "reject", "off")

DETECTOR = "haarcascade_frontalface_alt2.xml"  # finds the candidates in the whole image
CONFIRMERS = ("haarcascade_frontalface_alt.xml", "haarcascade_frontalface_default.xml")  # each must agree
ANALYSIS_SIDE = 512  # long side of the greyscale copy detection runs on (640: the same faces found in 150 astronaut crops, 1.5x the time)
SCALE_FACTOR = 1.2  # 1.1 finds a few more faces at 1.6x the time, and more false candidates
MIN_NEIGHBORS = 3
CONFIRM_PAD = 0.25  # of the candidate's side: the region around it the confirmers search
CONFIRM_SCALE_FACTOR = 1.1
CONFIRM_NEIGHBORS = 2
TONE_GAP = 0.4  # of a candidate's grey range (2nd-98th percentile): a wider empty gap is a drawing
MARGIN = 0.2  # of the face side, added on every side of a box before blurring
CELLS = 6  # cells across the face in the blurred box
JPEG_QUALITY = 92
ENCODINGS = {"JPEG": {"quality": JPEG_QUALITY}, "PNG": {}, "WEBP": {"quality": JPEG_QUALITY}}


@dataclass(frozen=True)
class Faces:
    """Faces found in one image: boxes (x0, y0, x1, y1) in pixels of the full-resolution upright image."""

    boxes: tuple[tuple[int, int, int, int], ...]

    @property
    def count(self) -> int:
        return len(self.boxes)


@dataclass(kw_only=True)
class FaceStage(BatchStage):
    """Count the faces in each kept image; blur them in the bytes or reject the row (see module doc)."""

    name: ClassVar[Stage] = Stage.PRIVACY
    reject_reasons: ClassVar[tuple[RejectReason, ...]] = (RejectReason.FACES,)
    faces: FaceMode = "blur"
    min_face_px: int = 20
    max_pixels: int = 89_478_485  # as DecodeStage: larger images were rejected there as bombs
    _cascades: Cascades | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.faces not in FACE_MODES:
            raise ValueError(f"privacy.faces must be one of {list(FACE_MODES)}, got {self.faces!r}")
        if self.min_face_px < 1:
            raise ValueError(f"privacy.min_face_px must be at least 1, got {self.min_face_px}")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cascades": None}  # loaded cascades do not pickle: setup() reloads them

    def setup(self) -> None:
        if self._cascades is not None or self.faces == "off":
            return
        cv2.setNumThreads(1)  # the stage runs beside the embedding and other tasks: one core each
        self._cascades = Cascades.load()

    def process_batch(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        if self.faces == "off":
            return set_column(table, "faces", pa.nulls(n, pa.int16()))
        self.setup()
        images = table.column("image")
        rows = np.flatnonzero(kept_mask(table) & images.is_valid().to_numpy(zero_copy_only=False))
        counts: list[int | None] = [None] * n
        reasons: list[RejectReason | None] = [None] * n
        blurred: dict[int, bytes] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # hostile files warn about EXIF, palettes, bombs
            for i, data in zip(rows, images.take(rows).to_pylist()):
                found = self.detect(data)
                if found is None:
                    continue
                counts[i] = found.count
                if not found.count:
                    continue
                if self.faces == "reject":
                    reasons[i] = RejectReason.FACES
                    continue
                out = blur_faces(data, found, max_pixels=self.max_pixels)
                if out is None:
                    reasons[i] = RejectReason.FACES  # never keep a face that could not be blurred
                else:
                    blurred[int(i)] = out
        if blurred:
            values = images.to_pylist()
            for i, out in blurred.items():
                values[i] = out
            table = set_column(table, "image", pa.array(values, type=images.type))
            table = mark_bytes_rewritten(table, list(blurred))
        table = set_column(table, "faces", counts, pa.int16())
        return apply_rejections(table, reasons, self.name) if any(reasons) else table

    def detect(self, data: bytes) -> Faces | None:
        """The faces in one image, or None when its bytes do not open."""
        self.setup()
        try:
            grey, (width, height) = analysis_image(data, max_pixels=self.max_pixels)
        except Exception:  # noqa: BLE001 - hostile bytes can raise anything from a codec
            return None
        return Faces(boxes=find_faces(self._cascades, grey, (width, height), min_face_px=self.min_face_px))


@dataclass(frozen=True)
class Cascades:
    """OpenCV's bundled frontal-face cascades: one finds candidates, the others confirm each one."""

    detector: cv2.CascadeClassifier
    confirmers: tuple[cv2.CascadeClassifier, ...]

    @classmethod
    def load(cls) -> Cascades:
        return cls(detector=_cascade(DETECTOR), confirmers=tuple(_cascade(name) for name in CONFIRMERS))


def _cascade(name: str) -> cv2.CascadeClassifier:
    path = os.path.join(cv2.data.haarcascades, name)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"OpenCV's face cascade {path} did not load: reinstall opencv-python-headless")
    return cascade


def analysis_image(data: bytes, *, max_pixels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The upright greyscale copy detection runs on (long side at most ANALYSIS_SIDE) and the size of
    the full-resolution upright image. Raises on anything that does not open."""
    with Image.open(io.BytesIO(data), formats=FORMATS) as image:
        width, height = image.size
        if width * height > max_pixels:
            raise ValueError("over the pixel limit")
        if orientation(image) in (5, 6, 7, 8):
            width, height = height, width
        scale = ANALYSIS_SIDE / max(width, height)
        if image.format == "JPEG" and scale < 1:
            image.draft("L", (max(1, math.ceil(image.width * scale)), max(1, math.ceil(image.height * scale))))
        image.load()
        grey = _grey(upright(image))
        if max(grey.size) > ANALYSIS_SIDE:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            grey = grey.resize(size, Image.Resampling.BILINEAR)
        pixels = np.array(grey, dtype=np.uint8)
    return pixels, (width, height)


def find_faces(
    cascades: Cascades, grey: np.ndarray, full_size: tuple[int, int], *, min_face_px: int
) -> tuple[tuple[int, int, int, int], ...]:
    """Face boxes found in `grey`, mapped to the full-resolution image of `full_size` (width, height)."""
    h, w = grey.shape
    if min(h, w) < min_face_px:
        return ()
    found = cascades.detector.detectMultiScale(
        grey, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS, minSize=(min_face_px, min_face_px)
    )
    sx, sy = full_size[0] / w, full_size[1] / h
    boxes = []
    for x, y, bw, bh in sorted(tuple(int(v) for v in box) for box in found):
        confirmed = all(_confirms(confirmer, grey, (x, y, bw, bh)) for confirmer in cascades.confirmers)
        if confirmed and continuous_tone(grey[y : y + bh, x : x + bw]):
            x0, y0 = math.floor(x * sx), math.floor(y * sy)
            x1, y1 = min(full_size[0], math.ceil((x + bw) * sx)), min(full_size[1], math.ceil((y + bh) * sy))
            boxes.append((x0, y0, x1, y1))
    return tuple(boxes)


def _confirms(cascade: cv2.CascadeClassifier, grey: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Whether `cascade` also finds a face of about the candidate's size in the region around it."""
    x, y, w, h = box
    pad = round(max(w, h) * CONFIRM_PAD)
    region = grey[max(0, y - pad) : y + h + pad, max(0, x - pad) : x + w + pad]
    side = max(1, min(w, h) * 2 // 3)
    found = cascade.detectMultiScale(
        region, scaleFactor=CONFIRM_SCALE_FACTOR, minNeighbors=CONFIRM_NEIGHBORS, minSize=(side, side)
    )
    return len(found) > 0


def continuous_tone(patch: np.ndarray) -> bool:
    """Whether a candidate's grey levels run without a wide empty gap, as shading does in a photograph:
    drawn shapes are a few flat tones with hardly a pixel between them (JPEG noise only widens each)."""
    lo, hi = (int(v) for v in np.percentile(patch, (2, 98)))
    if hi - lo < 4:
        return False
    hist = np.bincount(patch.ravel(), minlength=256)[lo : hi + 1].astype(np.float64)
    width = max(3, len(hist) // 16)
    smooth = np.convolve(hist, np.ones(width) / width, mode="same")
    sparse = np.concatenate(([False], smooth < 0.25 * patch.size / len(hist), [False]))
    edges = np.flatnonzero(np.diff(sparse.astype(np.int8)))  # starts and ends of the sparse runs
    longest = int((edges[1::2] - edges[::2]).max()) if len(edges) else 0
    return longest < TONE_GAP * len(hist)


def blur_faces(data: bytes, faces: Faces, *, max_pixels: int) -> bytes | None:
    """`data` with every face box blurred, re-encoded in its own format; None when it does not decode."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as source:
            if source.width * source.height > max_pixels:
                return None
            source.load()
            fmt = source.format if source.format in ENCODINGS else "JPEG"
            icc = source.info.get("icc_profile")
            image = _for_output(upright(source), fmt)
        pixels = np.array(image)  # a writable copy
        for box in faces.boxes:
            _blur_box(pixels, box)
        buffer = io.BytesIO()
        extra = {"icc_profile": icc} if icc else {}
        Image.fromarray(pixels, image.mode).save(buffer, format=fmt, **ENCODINGS[fmt], **extra)
    except Exception:  # noqa: BLE001
        return None
    return buffer.getvalue()


def _grey(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I") or image.mode == "F":
        image = to_rgb(image)
    return image if image.mode == "L" else image.convert("L")


def _for_output(image: Image.Image, fmt: str) -> Image.Image:
    """The image in a mode `fmt` saves: 8-bit grey or RGB, with alpha where the format keeps it."""
    if image.mode.startswith("I") or image.mode == "F":
        image = to_rgb(image)
    alpha = image.mode in ("LA", "La", "PA", "RGBA", "RGBa") or (image.mode == "P" and "transparency" in image.info)
    grey = image.mode in ("1", "L", "LA", "La")
    if fmt == "JPEG":
        mode = "L" if grey else "RGB"
    elif fmt == "PNG":
        mode = ("LA" if alpha else "L") if grey else ("RGBA" if alpha else "RGB")
    else:
        mode = "RGBA" if alpha else "RGB"
    return image if image.mode == mode else image.convert(mode)


def _blur_box(pixels: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """Blur one face box (widened by MARGIN) in place: down to ~CELLS cells across the face, smoothed,
    and back up. Alpha is left as it is."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    pad = round(side * MARGIN)
    height, width = pixels.shape[:2]
    x0, y0, x1, y1 = max(0, x0 - pad), max(0, y0 - pad), min(width, x1 + pad), min(height, y1 + pad)
    if x1 <= x0 or y1 <= y0:
        return
    channels = 1 if pixels.ndim == 2 or pixels.shape[2] == 2 else 3
    region = np.ascontiguousarray(pixels[y0:y1, x0:x1] if pixels.ndim == 2 else pixels[y0:y1, x0:x1, :channels])
    cell = max(1.0, side / CELLS)
    small = cv2.resize(
        region,
        (max(1, round((x1 - x0) / cell)), max(1, round((y1 - y0) / cell))),
        interpolation=cv2.INTER_AREA,
    )
    small = cv2.GaussianBlur(small, (0, 0), 0.8, borderType=cv2.BORDER_REPLICATE)
    smooth = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    if pixels.ndim == 2:
        pixels[y0:y1, x0:x1] = smooth
    else:
        pixels[y0:y1, x0:x1, :channels] = smooth.reshape(y1 - y0, x1 - x0, channels)
