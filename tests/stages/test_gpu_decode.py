"""The device decode path, run with device=cpu, against the CPU decoder on the same bytes."""

import io

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from skimage import data as samples

from curation.io.readers import RAW_SCHEMA
from curation.schema import RejectReason
from curation.stages.decode import DecodeStage
from curation.stages.gpu_decode import GpuDecodeStage

SIZE = 64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the test box has 2 shared cores: more threads only contend
    yield
    torch.set_num_threads(previous)


def encode(image: Image.Image, fmt="JPEG", **args) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **args)
    return buf.getvalue()


def photos() -> list[bytes]:
    """Real photographs at web-like and small sizes, baseline, progressive and greyscale JPEGs."""
    out = []
    for name, long_side in [("astronaut", 900), ("coffee", 640), ("chelsea", 1200), ("rocket", 300), ("camera", 700)]:
        image = Image.fromarray(getattr(samples, name)())
        scale = long_side / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        out.append(encode(image, quality=90, progressive=name == "coffee"))
    return out


def hostile() -> list[bytes | None]:
    photo = photos()[0]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the CPU decoder applies it
    rotated = encode(Image.fromarray(np.zeros((30, 90, 3), np.uint8)), exif=exif)
    corrupt = bytearray(photo)
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 200] = b"\xff" * 200
    return [
        None,
        b"",
        b"<html><body>404</body></html>",
        photo[:400],  # truncated header
        photo[: len(photo) // 2],  # truncated scan
        photo[:-2] + b"\x00\x00",  # end marker lost
        bytes(corrupt),
        encode(Image.new("CMYK", (40, 40), (0, 50, 100, 0))),
        encode(Image.new("RGBA", (50, 40), (10, 20, 30, 40)), "PNG"),
        rotated,
        encode(Image.fromarray(np.zeros((20, 300, 3), np.uint8))),  # extreme aspect: decodes
        b"\xff\xd8\xff\xe0" + b"\x00" * 64 + b"\xff\xd9",  # JPEG signature, nonsense inside
        claims_more_than_it_holds(encode(Image.fromarray(np.zeros((16, 16, 3), np.uint8)))),
    ]


def claims_more_than_it_holds(data: bytes) -> bytes:
    """A 16x16 JPEG whose frame header says 3000x2000 (ends with its end marker: libjpeg pads it)."""
    data, pos = bytearray(data), 2
    while data[pos + 1] != 0xC0:
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    data[pos + 5 : pos + 9] = (2000).to_bytes(2, "big") + (3000).to_bytes(2, "big")
    return bytes(data)


def table(images: list[bytes | None]) -> pa.Table:
    n = len(images)
    return pa.table(
        {
            "key": [f"s/{i:03d}" for i in range(n)],
            "source": ["s"] * n,
            "url": [None] * n,
            "caption": ["a photo of something"] * n,
            "image": images,
            "status": ["kept"] * n,
            "reject_reason": [None] * n,
            "reject_stage": [None] * n,
        },
        schema=RAW_SCHEMA,
    )


def both(images):
    t = table(images)
    return DecodeStage(image_size=SIZE).process_batch(t), GpuDecodeStage(image_size=SIZE, device="cpu").process_batch(t)


def test_photographs_decode_like_the_cpu_path():
    cpu, dev = both(photos())
    for column in ("status", "sha256", "width", "height"):
        assert dev.column(column).to_pylist() == cpu.column(column).to_pylist()
    assert dev.column("status").to_pylist() == ["kept"] * 5
    for a, b in zip(dev.column("pixels").to_pylist(), cpu.column("pixels").to_pylist()):
        a, b = np.frombuffer(a, np.uint8).astype(int), np.frombuffer(b, np.uint8).astype(int)
        assert a.shape == (SIZE * SIZE * 3,)
        assert np.abs(a - b).mean() < 6.0  # of 255: resampling differences only
    for a, b in zip(dev.column("phash").to_pylist(), cpu.column("phash").to_pylist()):
        assert bin(a ^ b).count("1") <= 4  # far inside the near-duplicate radius (12)


def test_photographs_take_the_device_path():
    stage = GpuDecodeStage(image_size=SIZE, device="cpu")
    assert all(stage.device_header(data) is not None for data in photos())


def test_hostile_inputs_get_the_cpu_paths_reasons():
    images = hostile()
    cpu, dev = both(images)
    for column in ("status", "reject_reason", "reject_stage", "sha256", "width", "height"):
        assert dev.column(column).to_pylist() == cpu.column(column).to_pylist(), column
    reasons = set(dev.column("reject_reason").to_pylist())
    assert {
        RejectReason.MISSING_IMAGE.value,
        RejectReason.EMPTY_IMAGE.value,
        RejectReason.NOT_AN_IMAGE.value,
    } <= reasons
    assert RejectReason.TRUNCATED_IMAGE.value in reasons
    assert dev.column("pixels").is_valid().to_pylist() == cpu.column("pixels").is_valid().to_pylist()


def test_bombs_are_rejected_before_decoding():
    big = encode(Image.fromarray(np.zeros((300, 300, 3), np.uint8)))
    stage = GpuDecodeStage(image_size=SIZE, max_pixels=250 * 250, device="cpu")  # the 300x200 photo fits
    out = stage.process_batch(table([big, photos()[3]]))
    assert out.column("reject_reason").to_pylist() == [RejectReason.DECOMPRESSION_BOMB.value, None]


def test_huge_batches_are_split_by_pixels(monkeypatch):
    import curation.stages.gpu_decode as gpu_decode

    monkeypatch.setattr(gpu_decode, "BATCH_PIXELS", 500_000)  # < two 900x600 photos per device batch
    images = photos()
    cpu, dev = both(images)
    assert dev.column("width").to_pylist() == cpu.column("width").to_pylist()
    assert dev.column("status").to_pylist() == ["kept"] * len(images)
