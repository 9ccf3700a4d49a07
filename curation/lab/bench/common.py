"""What the throughput benchmarks share: web-sized test JPEGs, img2dataset-style shards, a memory
sampler over a whole process tree, and the last-line-JSON convention.

Test images are photographs (scikit-image's bundled sample photos: astronaut, coffee, chelsea, rocket,
...) resized to a long side drawn from 640-1600 px, as real crawls are, with a random crop and light
sensor-like noise, saved as JPEG at quality 75-95. Without scikit-image they are synthetic
noise-and-gradient pictures of the same sizes. A pool of distinct pictures is encoded once and each
row gets its own copy with a unique JPEG comment segment, so rows have distinct bytes (and sha256) at
no encoding cost; decoding costs the same as for the original.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

LONG_SIDE = (640, 1600)  # web images: long side in pixels
SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina", "camera", "cat")
POOL = 48  # distinct pictures encoded per benchmark


def photographs() -> tuple[list[np.ndarray], str]:
    """Source pictures (RGB uint8 arrays) and what they are."""
    try:
        from skimage import data
    except ImportError:
        return [], "synthetic noise+gradients (scikit-image not installed)"
    pictures = []
    for name in SAMPLE_PHOTOS:
        try:
            array = getattr(data, name)()
        except Exception:  # noqa: BLE001 - a sample that needs a download is skipped
            continue
        pictures.append(np.asarray(Image.fromarray(array).convert("RGB")))
    return pictures, "scikit-image sample photographs, resized and cropped"


def _synthetic(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * rng.uniform(120, 255, 3)
    noise = rng.normal(0, 25, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def web_jpeg_pool(seed: int = 0, size: int = POOL) -> tuple[list[bytes], str]:
    """`size` distinct web-sized JPEGs and a description of their content."""
    rng = np.random.default_rng(seed)
    pictures, kind = photographs()
    pool = []
    for i in range(size):
        long_side = int(rng.integers(LONG_SIDE[0], LONG_SIDE[1] + 1))
        aspect = float(rng.uniform(0.6, 1.0))  # short / long
        width, height = (
            (long_side, round(long_side * aspect)) if rng.random() < 0.7 else (round(long_side * aspect), long_side)
        )
        if pictures:
            source = Image.fromarray(pictures[i % len(pictures)])
            # crop a random window of the target aspect, then resize it to the target size
            scale = min(source.width / width, source.height / height) * float(rng.uniform(0.8, 1.0))
            cw, ch = max(1, int(width * scale)), max(1, int(height * scale))
            left, top = int(rng.integers(0, source.width - cw + 1)), int(rng.integers(0, source.height - ch + 1))
            image = source.resize((width, height), Image.Resampling.BICUBIC, box=(left, top, left + cw, top + ch))
            noisy = np.asarray(image, dtype=np.int16) + rng.normal(0, 4, (height, width, 3)).astype(np.int16)
            image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        else:
            image = _synthetic(rng, width, height)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=int(rng.integers(75, 96)))
        pool.append(buf.getvalue())
    return pool, kind


def unique_copy(jpeg: bytes, tag: int) -> bytes:
    """The same JPEG with a comment segment (COM) naming `tag` right after its start marker."""
    text = f"row {tag}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


class WebJpegs(Sequence):
    """`n` rows of JPEG bytes made on access from the pool (row i: pool[i % len(pool)], tagged i), so
    ten thousand web-sized images need not sit in memory at once."""

    def __init__(self, pool: list[bytes], n: int) -> None:
        self.pool, self.n = pool, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.n))]
        if not -self.n <= index < self.n:
            raise IndexError(index)
        index %= self.n
        return unique_copy(self.pool[index % len(self.pool)], index)


def web_jpegs(n: int, seed: int = 0) -> tuple[WebJpegs, str]:
    pool, kind = web_jpeg_pool(seed, min(POOL, n))
    return WebJpegs(pool, n), kind


CAPTION_WORDS = ("a photo of", "a picture of", "an image showing", "a close-up of")
CAPTION_THINGS = ("a person in a suit", "a cup of coffee", "a cat", "a rocket", "a camera man", "cells", "an eye")


def captions(n: int) -> list[str]:
    return [f"{CAPTION_WORDS[i % 4]} {CAPTION_THINGS[i % 7]} number {i}" for i in range(n)]


def write_parquet_shards(out_dir: Path, images: Sequence[bytes], shard_size: int) -> list[Path]:
    """img2dataset's Parquet layout with image bytes: NNNNN.parquet with key, caption, url and jpg."""
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = captions(len(images))
    paths = []
    for shard, start in enumerate(range(0, len(images), shard_size)):
        stop = min(len(images), start + shard_size)
        table = pa.table(
            {
                "key": [f"{shard:05d}{i - start:04d}" for i in range(start, stop)],
                "caption": texts[start:stop],
                "url": [f"https://example.com/{i}.jpg" for i in range(start, stop)],
                "jpg": pa.array(images[start:stop], pa.binary()),
            }
        )
        path = out_dir / f"{shard:05d}.parquet"
        pq.write_table(table, path)
        paths.append(path)
    return paths


def plain_pil(data: bytes, size: int) -> np.ndarray:
    """The plain loop the decoder is compared with: open, convert to RGB, resize to the model size."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.Resampling.BICUBIC))


class TreeMemory:
    """Peak memory of a process and all its descendants (e.g. the driver, Ray's daemons and workers),
    sampled every `interval` seconds. Summed PSS (proportional set size) counts pages shared between
    processes — the object store, shared libraries — once, where summed RSS would count them in every
    process that maps them; RSS is the fallback where PSS is unavailable."""

    def __init__(self, pid: int | None = None, interval: float = 0.25) -> None:
        self.root = psutil.Process(pid or os.getpid())
        self.interval = interval
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()

    def current(self) -> int:
        total = 0
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        for process in processes:
            try:
                info = process.memory_full_info()
                total += getattr(info, "pss", info.rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self.current())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def gib(self) -> float:
        return self.peak_bytes / 2**30


@dataclass
class Timer:
    seconds: float = 0.0

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start


def json_line(figures: dict) -> str:
    """The benchmark's last line: one JSON object, figures rounded for reading."""
    return json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()})


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
