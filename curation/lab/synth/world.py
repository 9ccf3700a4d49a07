"""Scenes of the synthetic world: sampled attributes, a rendered image and templated captions.

A scene is a few identical shapes (shape, colour, texture, count) on a coloured background. Its layout
comes from its own seed, so the same scene renders the same composition at any size. Rendering draws a
shape mask with PIL and fills it with a numpy texture: no per-pixel Python loops.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 155, 60),
    "blue": (35, 75, 215),
    "yellow": (240, 215, 35),
    "purple": (125, 50, 165),
    "orange": (245, 135, 20),
    "pink": (245, 135, 195),
    "brown": (115, 70, 30),
    "black": (20, 20, 20),
    "white": (240, 240, 240),
    "grey": (128, 128, 128),
    "cyan": (35, 200, 210),
}
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "ring")
TEXTURES = ("plain", "stripes", "dots", "checker")
COUNTS = (1, 2, 3, 4)
DESCRIPTIONS = len(SHAPES) * len(COLOURS) * (len(COLOURS) - 1) * len(TEXTURES) * len(COUNTS)  # distinct scenes

_PLURALS = {"cross": "crosses"}
_COUNT_WORDS = {1: ("a", "one"), 2: ("two",), 3: ("three",), 4: ("four",)}
_TEXTURE_ADJECTIVES = {
    "plain": ("plain", "solid"),
    "stripes": ("striped",),
    "dots": ("dotted", "polka-dot"),
    "checker": ("checkered", "chequered"),
}
_TEXTURE_NOUNS = {"plain": "plain", "stripes": "striped", "dots": "dotted", "checker": "checkerboard"}
CAPTION_TEMPLATES = (
    "{count} {colour} {texture} {shape} on a {background} background",
    "a photo of {count} {texture} {colour} {shape} on a {background} background",
    "stock illustration: {count} {colour} {texture} {shape}, {background} background",
    "{count} {colour} {shape} with a {pattern} pattern against a {background} backdrop",
    "clip art of {count} {texture} {colour} {shape} over a {background} background",
    "an image showing {count} {colour} {shape} ({pattern}) on {background}",
)

_ARTICLE = re.compile(r"(^|\s)a ([aeiou])")

NORMAL_SHORT_SIDE = (96, 192)
NORMAL_ASPECT = (1.0, 1.33)  # long side / short side; the orientation is drawn separately
JPEG_QUALITY = 90


@dataclass(frozen=True, kw_only=True)
class Scene:
    shape: str
    colour: str
    count: int
    texture: str
    background: str
    layout_seed: int

    def attributes(self) -> dict:
        """The scene as the truth file records it (the layout seed is a rendering detail)."""
        return {
            "shape": self.shape,
            "colour": self.colour,
            "count": self.count,
            "texture": self.texture,
            "background": self.background,
        }

    def caption(self, rng: np.random.Generator) -> str:
        """One English caption naming count, colour, shape, texture and background."""
        words = {
            "count": _pick(rng, _COUNT_WORDS[self.count]),
            "colour": self.colour,
            "texture": _pick(rng, _TEXTURE_ADJECTIVES[self.texture]),
            "pattern": _TEXTURE_NOUNS[self.texture],
            "shape": self.shape if self.count == 1 else _PLURALS.get(self.shape, self.shape + "s"),
            "background": self.background,
        }
        return _ARTICLE.sub(r"\1an \2", _pick(rng, CAPTION_TEMPLATES).format(**words))

    def render(self, width: int, height: int) -> Image.Image:
        rng = np.random.default_rng(self.layout_seed)
        background = _background(rng, width, height, COLOURS[self.background])
        fill = _texture(rng, width, height, self.texture, COLOURS[self.colour])
        mask = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(mask)
        for cx, cy, radius in _layout(rng, width, height, self.count):
            _draw_shape(draw, self.shape, cx, cy, radius, rotation=rng.uniform(-0.3, 0.3))
        return Image.composite(fill, background, mask)


def sample_scene(rng: np.random.Generator) -> Scene:
    colour = _pick(rng, tuple(COLOURS))
    background = _pick(rng, tuple(name for name in COLOURS if name != colour))
    return Scene(
        shape=_pick(rng, SHAPES),
        colour=colour,
        count=int(_pick(rng, COUNTS)),
        texture=_pick(rng, TEXTURES),
        background=background,
        layout_seed=int(rng.integers(2**31)),
    )


def sibling_scene(scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene with one attribute (shape, colour, count, texture or background) changed and the same
    layout seed: the hardest scene to tell apart from it (a contrastive hard negative)."""
    attribute = _pick(rng, ("shape", "colour", "count", "texture", "background"))
    taken = {"colour": (scene.colour, scene.background), "background": (scene.background, scene.colour)}
    options = {
        "shape": SHAPES,
        "colour": tuple(COLOURS),
        "count": COUNTS,
        "texture": TEXTURES,
        "background": tuple(COLOURS),
    }
    current = getattr(scene, attribute)
    choices = tuple(v for v in options[attribute] if v != current and v not in taken.get(attribute, ()))
    return replace(scene, **{attribute: _pick(rng, choices)})


def shape_sibling(scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene with another shape and nothing else changed (same layout): told apart by form alone."""
    return replace(scene, shape=_pick(rng, tuple(s for s in SHAPES if s != scene.shape)))


def lookalike_scene(scene: Scene, rng: np.random.Generator) -> Scene:
    """Another scene of the same colours and texture: another shape or count (or both) and another
    layout. Two such scenes are what an embedding that sees colour before form confuses most."""
    change = _pick(rng, ("shape", "count", "both"))
    shape, count = scene.shape, scene.count
    if change in ("shape", "both"):
        shape = _pick(rng, tuple(s for s in SHAPES if s != scene.shape))
    if change in ("count", "both"):
        count = int(_pick(rng, tuple(c for c in COUNTS if c != scene.count)))
    return replace(scene, shape=shape, count=count, layout_seed=int(rng.integers(2**31)))


def sample_size(
    rng: np.random.Generator,
    *,
    short_side: tuple[int, int] = NORMAL_SHORT_SIDE,
    aspect: tuple[float, float] = NORMAL_ASPECT,
) -> tuple[int, int]:
    """(width, height) with the short side in `short_side` and long/short in `aspect`, either way up."""
    short = int(rng.integers(short_side[0], short_side[1] + 1))
    long = max(short, round(short * rng.uniform(*aspect)))
    return (long, short) if rng.random() < 0.5 else (short, long)


def encode_jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode(payload: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(payload))
    image.load()
    return image


def _pick(rng: np.random.Generator, options: tuple):
    return options[int(rng.integers(len(options)))]


def _background(rng: np.random.Generator, width: int, height: int, rgb: tuple[int, int, int]) -> Image.Image:
    """The background colour with a gentle linear gradient (2x2 corners, bilinear upscale)."""
    angle = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(angle), math.sin(angle)
    corners = np.array([[[-c - s], [c - s]], [[s - c], [c + s]]], np.float32) * 15.0
    small = np.clip(np.asarray(rgb, np.float32) + corners, 0, 255).astype(np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)


def _texture(rng: np.random.Generator, width: int, height: int, texture: str, rgb: tuple[int, int, int]) -> Image.Image:
    """The shapes' fill: the colour, patterned with a contrasting tone of it, tiled from one period."""
    base = np.asarray(rgb, np.float32)
    contrast = base * 0.35 if base.mean() > 110 else base + (255 - base) * 0.6
    period = max(4, min(width, height) // int(rng.integers(8, 14)))
    ys, xs = np.ogrid[0 : 2 * period, 0 : 2 * period]
    if texture == "stripes":
        pattern = ((xs + ys) // period) % 2 == 1
    elif texture == "dots":
        dx, dy = xs % period - period / 2, ys % period - period / 2
        pattern = dx * dx + dy * dy < (period * 0.3) ** 2
    elif texture == "checker":
        pattern = ((xs // period) + (ys // period)) % 2 == 1
    else:
        pattern = np.zeros((2 * period, 2 * period), bool)
    tile = np.where(pattern[..., None], contrast.astype(np.uint8), base.astype(np.uint8))
    reps = (height // (2 * period) + 1, width // (2 * period) + 1, 1)
    return Image.fromarray(np.ascontiguousarray(np.tile(tile, reps)[:height, :width]))


def _layout(rng: np.random.Generator, width: int, height: int, count: int) -> list[tuple[float, float, float]]:
    """(centre x, centre y, radius) of each shape: one per cell of the grid that fits the image best."""
    grids = [(cols, rows) for cols in range(1, count + 1) for rows in range(1, count + 1) if cols * rows >= count]
    cols, rows = min(grids, key=lambda g: (abs(math.log((width / g[0]) / (height / g[1]))), g[0] * g[1]))
    cell_w, cell_h = width / cols, height / rows
    cells = rng.permutation(cols * rows)[:count]
    placed = []
    for cell in cells:
        radius = 0.5 * min(cell_w, cell_h) * rng.uniform(0.6, 0.85)
        slack_x, slack_y = cell_w / 2 - radius, cell_h / 2 - radius
        cx = (cell % cols + 0.5) * cell_w + rng.uniform(-slack_x, slack_x)
        cy = (cell // cols + 0.5) * cell_h + rng.uniform(-slack_y, slack_y)
        placed.append((cx, cy, radius))
    return placed


def _polygon(cx: float, cy: float, radii: list[float], rotation: float) -> list[tuple[float, float]]:
    """Vertices at equal angles around (cx, cy), starting at the top."""
    step = 2 * math.pi / len(radii)
    return [
        (cx + r * math.cos(rotation - math.pi / 2 + i * step), cy + r * math.sin(rotation - math.pi / 2 + i * step))
        for i, r in enumerate(radii)
    ]


def _cross(cx: float, cy: float, radius: float, rotation: float) -> list[tuple[float, float]]:
    arm = radius / 3
    outline = [
        (-arm, -radius),
        (arm, -radius),
        (arm, -arm),
        (radius, -arm),
        (radius, arm),
        (arm, arm),
        (arm, radius),
        (-arm, radius),
        (-arm, arm),
        (-radius, arm),
        (-radius, -arm),
        (-arm, -arm),
    ]
    cos, sin = math.cos(rotation), math.sin(rotation)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in outline]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, radius: float, rotation: float) -> None:
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    if shape == "circle":
        draw.ellipse(box, fill=255)
    elif shape == "ring":
        draw.ellipse(box, fill=255)
        inner = radius * 0.55
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
    elif shape == "cross":
        draw.polygon(_cross(cx, cy, radius, rotation), fill=255)
    else:
        radii = {
            "square": [radius] * 4,
            "triangle": [radius] * 3,
            "hexagon": [radius] * 6,
            "star": [radius, radius * 0.45] * 5,
            "diamond": [radius, radius * 0.65] * 2,
        }[shape]
        offset = math.pi / 4 if shape == "square" else 0.0
        draw.polygon(_polygon(cx, cy, radii, rotation + offset), fill=255)
