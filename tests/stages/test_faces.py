"""Face stage on real pictures: scikit-image's astronaut (a face) and faceless photos, and scenes of
the synthetic world. Faces are counted, blurred in the bytes or rejected; faceless bytes never change."""

from __future__ import annotations

import hashlib
import io
import pickle

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curation.config import PrivacyConfig
from curation.lab.synth.world import encode_jpeg, sample_scene, sample_size
from curation.schema import RejectReason, Stage
from curation.stages.faces import MARGIN, FaceStage

skimage_data = pytest.importorskip("skimage.data")

# Faceless scikit-image photos (the cat's face is not a human one; `camera` shows a man, so not here).
FACELESS_PHOTOS = ("coffee", "rocket", "chelsea", "cat", "immunohistochemistry", "retina")


def encode(image: Image.Image, fmt: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def pixels(data: bytes, mode: str = "RGB") -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert(mode), dtype=np.float64)


def records(images: list[bytes | None], status: list[str] | None = None) -> pa.Table:
    """Full records as the privacy stage gets them, after decode and the filters."""
    n = len(images)
    status = status or ["kept"] * n
    sizes = []
    for data in images:
        try:
            with Image.open(io.BytesIO(data)) as image:
                sizes.append(image.size)
        except Exception:  # noqa: BLE001 - bytes that do not open have no size
            sizes.append((None, None))
    return pa.table(
        {
            "key": [f"t/{i:04d}" for i in range(n)],
            "caption": ["a picture"] * n,
            "image": pa.array(images, pa.binary()),
            "width": pa.array([w for w, _ in sizes], pa.int32()),
            "height": pa.array([h for _, h in sizes], pa.int32()),
            "sha256": [hashlib.sha256(data).hexdigest() if data is not None else None for data in images],
            "clip_score": pa.array([0.3] * n, pa.float32()),
            "status": status,
            "reject_reason": [None if s == "kept" else "low_clip_score" for s in status],
            "reject_stage": [None if s == "kept" else "clip" for s in status],
        }
    )


@pytest.fixture(scope="module")
def stage() -> FaceStage:
    stage = FaceStage(**PrivacyConfig(faces="blur").model_dump())
    stage.setup()
    return stage


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skimage_data.astronaut())


def laplacian_energy(a: np.ndarray) -> float:
    """Mean squared Laplacian of `a` seen at 64x64: the detail at the scale of the face itself."""
    grey = Image.fromarray((a.mean(axis=2) if a.ndim == 3 else a).astype(np.float32), "F")
    grey = np.asarray(grey.resize((64, 64), Image.Resampling.BOX), dtype=np.float64)
    lap = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return float((lap**2).mean())


def widened(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    pad = round(max(x1 - x0, y1 - y0) * MARGIN) + 2
    return max(0, x0 - pad), max(0, y0 - pad), min(size[0], x1 + pad), min(size[1], y1 + pad)


def outside(a: np.ndarray, box: tuple[int, int, int, int], far: int = 0) -> np.ndarray:
    """The pixels of `a` at least `far` pixels outside `box`."""
    x0, y0, x1, y1 = box
    mask = np.ones(a.shape[:2], bool)
    mask[max(0, y0 - far) : y1 + far, max(0, x0 - far) : x1 + far] = False
    return a[mask]


@pytest.mark.parametrize(
    ("fmt", "scale", "noise"),
    [("JPEG", 1, 4.0), ("PNG", 1, 0.0), ("WEBP", 1, 4.0), ("JPEG", 3, 4.0)],
    ids=["jpeg", "png", "webp", "jpeg-1536px"],
)
def test_the_astronauts_face_is_found_and_blurred(stage, astronaut, fmt, scale, noise):
    source = astronaut.resize((512 * scale, 512 * scale), Image.Resampling.BICUBIC) if scale > 1 else astronaut
    data = encode(source, fmt, **({"quality": 90} if fmt != "PNG" else {}))
    table = records([data])

    out = stage.process_batch(table)

    assert out.num_rows == 1
    assert out.column("faces").type == pa.int16()
    assert out.column("faces").to_pylist() == [1]
    assert out.column("status").to_pylist() == ["kept"]
    for column in ("key", "width", "height", "sha256", "status", "reject_reason"):
        assert out.column(column).equals(table.column(column)), column  # sha256: the source's identity
    blurred = out.column("image")[0].as_py()
    with Image.open(io.BytesIO(blurred)) as image:
        assert image.format == fmt
        assert image.size == source.size

    (box,) = stage.detect(data).boxes
    x0, y0, x1, y1 = box
    assert 150 * scale <= (x0 + x1) / 2 <= 300 * scale and 60 * scale <= (y0 + y1) / 2 <= 170 * scale  # her face
    before, after = pixels(data), pixels(blurred)
    face_before, face_after = before[y0:y1, x0:x1], after[y0:y1, x0:x1]
    assert np.abs(face_after - face_before).mean() > 15  # JPEG re-encoding changes a pixel by ~1-2
    assert laplacian_energy(face_after) < 0.02 * laplacian_energy(face_before)  # no fine detail left
    # far from the face only the re-encoding shows: lossless formats keep every pixel outside the box
    region = widened(box, source.size)
    difference = np.abs(outside(after, region, far=8 * scale) - outside(before, region, far=8 * scale))
    assert difference.mean() <= (noise / 2 if noise else 0.0)
    if not noise:
        assert difference.max() == 0
    assert stage.detect(blurred).count == 0  # the detector no longer finds her


def test_blurring_keeps_grey_and_alpha(stage, astronaut):
    alpha = Image.linear_gradient("L").resize(astronaut.size)
    rgba = astronaut.convert("RGBA")
    rgba.putalpha(alpha)
    grey = encode(astronaut.convert("L"), "JPEG", quality=90)
    out = stage.process_batch(records([encode(rgba, "PNG"), grey]))
    assert out.column("faces").to_pylist() == [1, 1]
    with Image.open(io.BytesIO(out.column("image")[0].as_py())) as image:
        assert (image.format, image.mode) == ("PNG", "RGBA")
        assert np.array_equal(np.asarray(image)[..., 3], np.asarray(alpha))
    with Image.open(io.BytesIO(out.column("image")[1].as_py())) as image:
        assert (image.format, image.mode) == ("JPEG", "L")


def test_other_formats_are_written_as_jpeg(stage, astronaut):
    out = stage.process_batch(records([encode(astronaut, "BMP")]))
    assert out.column("faces").to_pylist() == [1]
    with Image.open(io.BytesIO(out.column("image")[0].as_py())) as image:
        assert (image.format, image.size) == ("JPEG", astronaut.size)


def test_exif_orientation_is_applied_before_looking(stage, astronaut):
    upright = astronaut.crop((0, 0, 512, 400))  # landscape, the face in the upper middle
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a camera held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: upright again
    data = encode(stored, "JPEG", quality=92, exif=exif.tobytes())

    out = stage.process_batch(records([data]))

    assert out.column("faces").to_pylist() == [1]
    blurred = out.column("image")[0].as_py()
    with Image.open(io.BytesIO(blurred)) as image:
        assert image.size == upright.size  # the pixels are upright now, and no orientation tag is left
        assert image.getexif().get(0x0112) is None
    (box,) = stage.detect(data).boxes
    x0, y0, x1, y1 = box
    assert 150 <= (x0 + x1) / 2 <= 300 and 60 <= (y0 + y1) / 2 <= 170  # found on the upright image
    original = np.asarray(upright.convert("RGB"), dtype=np.float64)
    assert np.abs(pixels(blurred)[y0:y1, x0:x1] - original[y0:y1, x0:x1]).mean() > 15


def scenes(n: int, seed: int = 3) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [encode_jpeg(sample_scene(rng).render(*sample_size(rng))) for _ in range(n)]


def faceless_photos() -> list[bytes]:
    photos = []
    for name in FACELESS_PHOTOS:
        image = Image.fromarray(getattr(skimage_data, name)()).convert("RGB")
        photos.append(encode(image, "JPEG", quality=90))
        photos.append(encode(image, "PNG"))
    return photos


def test_faceless_images_keep_their_exact_bytes(stage):
    images = scenes(48) + faceless_photos()
    table = records(images)

    out = stage.process_batch(table)

    assert out.column("faces").to_pylist() == [0] * len(images)
    assert out.column("image").to_pylist() == images  # byte-identical: never re-encoded
    assert out.drop_columns(["faces"]).equals(table)


def test_reject_mode_rejects_faces_and_leaves_the_bytes(stage, astronaut):
    face = encode(astronaut, "JPEG", quality=90)
    images = [face, *scenes(3)]
    table = records(images)

    out = FaceStage(faces="reject").process_batch(table)

    assert out.column("faces").to_pylist() == [1, 0, 0, 0]
    assert out.column("status").to_pylist() == ["rejected", "kept", "kept", "kept"]
    assert out.column("reject_reason").to_pylist() == [RejectReason.FACES.value, None, None, None]
    assert out.column("reject_stage").to_pylist() == [Stage.PRIVACY.value, None, None, None]
    assert out.column("image").to_pylist() == images


def test_off_mode_only_adds_a_null_faces_column(astronaut):
    table = records([encode(astronaut, "JPEG", quality=90), None])
    out = FaceStage(faces="off").process_batch(table)
    assert out.column("faces").type == pa.int16()
    assert out.column("faces").null_count == 2
    assert out.drop_columns(["faces"]).equals(table)


def test_rows_rejected_earlier_are_not_looked_at(stage, astronaut):
    face = encode(astronaut, "JPEG", quality=90)
    table = records([face, face], status=["rejected", "kept"])

    out = stage.process_batch(table)

    assert out.column("faces").to_pylist() == [None, 1]
    assert out.column("image")[0].as_py() == face  # untouched
    assert out.column("image")[1].as_py() != face  # blurred
    assert out.column("status").to_pylist() == ["rejected", "kept"]
    assert out.column("reject_reason").to_pylist() == ["low_clip_score", None]
    assert out.column("reject_stage").to_pylist() == ["clip", None]


def test_bytes_that_do_not_open_are_left_as_they_are(stage, astronaut):
    face = encode(astronaut, "JPEG", quality=90)
    bad = [b"", b"<html>404</html>", face[: len(face) // 3], b"\x89PNG\r\n\x1a\n" + bytes(64), None]
    images = [*bad, face]
    table = records(images)

    out = stage.process_batch(table)

    assert out.num_rows == len(images)
    assert out.column("faces").to_pylist() == [None] * len(bad) + [1]
    assert out.column("image").to_pylist()[: len(bad)] == bad
    assert out.column("status").to_pylist() == ["kept"] * len(images)


def test_images_over_the_pixel_limit_are_not_opened(astronaut):
    table = records([encode(astronaut, "JPEG", quality=90)])
    out = FaceStage(max_pixels=100 * 100).process_batch(table)
    assert out.column("faces").to_pylist() == [None]
    assert out.column("image").equals(table.column("image"))


def test_an_empty_batch_and_lazy_setup(astronaut):
    fresh = FaceStage()  # setup() not called: the cascades load on first use
    empty = records([]).slice(0, 0)
    assert fresh.process_batch(empty).column("faces").to_pylist() == []
    assert fresh.process_batch(records([encode(astronaut, "PNG")])).column("faces").to_pylist() == [1]


def test_the_stage_pickles_after_setup(stage, astronaut):
    clone = pickle.loads(pickle.dumps(stage))  # Ray ships stages to workers; the cascades reload there
    assert clone == stage
    assert clone.process_batch(records([encode(astronaut, "JPEG", quality=90)])).column("faces").to_pylist() == [1]


def test_mode_and_size_are_checked():
    assert FaceStage(**PrivacyConfig(faces="reject", min_face_px=32).model_dump()).faces == "reject"
    with pytest.raises(ValueError, match="privacy.faces"):
        FaceStage(faces="pixelate")
    with pytest.raises(ValueError, match="min_face_px"):
        FaceStage(min_face_px=0)
