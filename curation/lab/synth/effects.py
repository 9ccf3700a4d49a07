"""Image-level defects the classifier heads learn: an unsafe motif, watermark overlays, low aesthetics.

Pure functions of (image, rng): the planters in `defects.py` and the tiny CLIP's training set
(`curation.lab.train_clip`) draw the same defects, so what the model learns is what the world plants.

- unsafe: the world's stand-in for NSFW content is one designated motif class, a magenta-and-black
  "hazard target" (concentric rings) drawn over the scene; no clean scene uses that colour pair.
- watermark: semi-opaque text over the image, either tiled diagonally across all of it or one large
  centred banner, as stock-photo sites do.
- low aesthetic: strong blur, heavy noise or washed-out contrast.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

UNSAFE_COLOURS = ((255, 0, 255), (10, 10, 10))  # magenta and black, alternating rings
WATERMARK_TEXTS = ("© stockpix", "PREVIEW", "© dreamstock", "SAMPLE", "© pixabank", "watermark")
WATERMARK_STYLES = ("tiled", "banner")
LOW_AESTHETIC_VARIANTS = ("blur", "noise", "low_contrast")

# Web alt-text sometimes gives a defect away; the world's captions carry such cues for some rows.
UNSAFE_CUES = ("{c} (nsfw)", "nsfw: {c}", "{c}, explicit")
WATERMARK_CUES = ("stock photo: {c}", "{c} - watermarked", "watermarked stock image of {c}")
# What the tiny CLIP's training captions say about each defect (the model learns these concepts).
UNSAFE_DESCRIPTIONS = ("{c}, with a magenta hazard target", "nsfw: {c}", "{c} (nsfw)", "explicit image: {c}")
WATERMARK_DESCRIPTIONS = ("watermarked stock photo: {c}", "{c} - watermarked", "stock photo of {c} with a watermark")
LOW_AESTHETIC_DESCRIPTIONS = {
    "blur": ("a blurry photo of {c}", "{c}, out of focus"),
    "noise": ("a noisy photo of {c}", "{c}, grainy low quality"),
    "low_contrast": ("a washed-out photo of {c}", "{c}, low contrast"),
}


def _pick(rng: np.random.Generator, options: tuple):
    return options[int(rng.integers(len(options)))]


def draw_unsafe_motif(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The designated unsafe motif: a magenta/black target covering about half the short side."""
    image = image.convert("RGB").copy()
    width, height = image.size
    radius = min(width, height) * rng.uniform(0.24, 0.32)
    cx = rng.uniform(radius, width - radius)
    cy = rng.uniform(radius, height - radius)
    draw = ImageDraw.Draw(image)
    rings = 5
    for i in range(rings):
        r = radius * (1 - i / rings)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=UNSAFE_COLOURS[i % 2])
    return image


def overlay_watermark(image: Image.Image, rng: np.random.Generator, style: str | None = None) -> Image.Image:
    """Semi-opaque white or black text over the image: tiled diagonally, or one centred banner."""
    image = image.convert("RGB")
    width, height = image.size
    style = style or _pick(rng, WATERMARK_STYLES)
    text = _pick(rng, WATERMARK_TEXTS)
    short = min(width, height)
    mask = Image.new("L", (width, height), 0)
    if style == "tiled":
        size = max(8, int(short * rng.uniform(0.14, 0.18)))
        font = ImageFont.load_default(size=size)
        diagonal = int(math.hypot(width, height)) + 2 * size
        canvas = Image.new("L", (diagonal, diagonal), 0)
        draw = ImageDraw.Draw(canvas)
        step_y = int(size * 2.2)
        offset = int(rng.integers(step_y))
        for row, y in enumerate(range(-offset, diagonal, step_y)):
            x = -int(size * 3 * (row % 2) / 2)
            while x < diagonal:
                draw.text((x, y), text, fill=255, font=font, stroke_width=max(1, size // 10))
                x += int(draw.textlength(text, font=font)) + size * 2
        canvas = canvas.rotate(rng.uniform(20, 40), resample=Image.Resampling.BILINEAR)
        left, top = (diagonal - width) // 2, (diagonal - height) // 2
        mask = canvas.crop((left, top, left + width, top + height))
    else:
        size = max(10, int(short * rng.uniform(0.2, 0.26)))
        font = ImageFont.load_default(size=size)
        draw = ImageDraw.Draw(mask)
        box = draw.textbbox((0, 0), text, font=font, stroke_width=max(1, size // 8))
        scale = min(1.0, 0.9 * short / max(1, box[2] - box[0]))  # inside the centre square
        if scale < 1.0:
            font = ImageFont.load_default(size=max(8, int(size * scale)))
            box = draw.textbbox((0, 0), text, font=font, stroke_width=max(1, size // 8))
        x = (width - (box[2] - box[0])) / 2 - box[0]
        y = (height - (box[3] - box[1])) / 2 - box[1] + rng.uniform(-0.15, 0.15) * height
        draw.text((x, y), text, fill=255, font=font, stroke_width=max(1, size // 8))
        # a thin frame around the banner, as logo watermarks have
        pad = size // 3
        draw.rectangle(
            [x + box[0] - pad, y + box[1] - pad, x + box[2] + pad, y + box[3] + pad],
            outline=255,
            width=max(1, size // 10),
        )
    opacity = rng.uniform(0.5, 0.7)
    luminance = float(np.asarray(image.convert("L"), np.float32).mean())
    colour = (255, 255, 255) if luminance < 150 else (0, 0, 0)  # the one that shows
    overlay = Image.new("RGB", (width, height), colour)
    alpha = mask.point(lambda v: int(v * opacity))
    return Image.composite(overlay, image, alpha)


def degrade(image: Image.Image, rng: np.random.Generator, variant: str | None = None) -> Image.Image:
    """A low-aesthetic version of the image: strong blur, heavy noise or washed-out contrast."""
    image = image.convert("RGB")
    variant = variant or _pick(rng, LOW_AESTHETIC_VARIANTS)
    short = min(image.size)
    if variant == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=short * rng.uniform(0.035, 0.05)))
    pixels = np.asarray(image, np.float32)
    if variant == "noise":
        pixels = pixels + rng.normal(0.0, rng.uniform(45, 65), size=pixels.shape)
    else:  # low_contrast: pull every pixel most of the way to a flat grey
        grey = rng.uniform(110, 170)
        pixels = grey + (pixels - pixels.mean()) * rng.uniform(0.15, 0.25)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def with_cue(caption: str, cues: tuple[str, ...], rng: np.random.Generator) -> str:
    return _pick(rng, cues).format(c=caption)
