import hashlib
import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curation.io.readers import RAW_SCHEMA
from curation.schema import RejectReason
from curation.stages.decode import DecodeStage, decode_image


def jpeg(width=120, height=80, seed=0, **save_args) -> bytes:
    rng = np.random.default_rng(seed)
    arr = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", **save_args)
    return buf.getvalue()


def png(mode="RGBA", size=(50, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128 if mode in ("L", "P", "I;16") else (10, 20, 30, 40)[: len(mode)]).save(buf, "PNG")
    return buf.getvalue()


def test_decodes_to_model_sized_pixels():
    result = decode_image(jpeg(120, 80), size=64, max_pixels=10**8)
    assert (result.width, result.height) == (120, 80)
    assert len(result.pixels) == 64 * 64 * 3
    assert 0 <= result.phash < 2**64


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", RejectReason.EMPTY_IMAGE),
        (b"<html><body>404</body></html>", RejectReason.NOT_AN_IMAGE),
        (b'{"error": "no image"}', RejectReason.NOT_AN_IMAGE),
        (jpeg()[:400], RejectReason.TRUNCATED_IMAGE),
        (jpeg()[:2000], RejectReason.TRUNCATED_IMAGE),
    ],
    ids=["empty", "html", "json", "truncated-header", "truncated-scan"],
)
def test_bad_bytes_get_a_reason(data, reason):
    assert decode_image(data, size=64, max_pixels=10**8) == reason


def test_decompression_bomb_is_its_own_reason():
    assert decode_image(jpeg(200, 200), size=64, max_pixels=100 * 100) == RejectReason.DECOMPRESSION_BOMB


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "CMYK"])
def test_other_modes_decode_to_rgb(mode):
    if mode == "CMYK":
        buf = io.BytesIO()
        Image.new("CMYK", (40, 40), (0, 50, 100, 0)).save(buf, "JPEG")
        data = buf.getvalue()
    else:
        data = png(mode)
    result = decode_image(data, size=32, max_pixels=10**8)
    assert len(result.pixels) == 32 * 32 * 3


def test_exif_rotation_swaps_reported_size():
    image = Image.fromarray(np.zeros((30, 90, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif)
    result = decode_image(buf.getvalue(), size=32, max_pixels=10**8)
    assert (result.width, result.height) == (30, 90)


def test_stage_fills_hash_columns_and_keeps_rejected_rows():
    good, bad = jpeg(), b"not an image"
    table = pa.table(
        {
            "key": ["s/1", "s/2", "s/3"],
            "source": ["s"] * 3,
            "url": [None] * 3,
            "caption": ["a b c d"] * 3,
            "image": [good, bad, None],
            "status": ["kept", "kept", "rejected"],
            "reject_reason": [None, None, "missing_image"],
            "reject_stage": [None, None, "read"],
        },
        schema=RAW_SCHEMA,
    )
    out = DecodeStage(image_size=32).process_batch(table)
    assert out.num_rows == 3
    assert out.column("status").to_pylist() == ["kept", "rejected", "rejected"]
    assert out.column("reject_reason").to_pylist() == [None, "not_an_image", "missing_image"]
    assert out.column("sha256").to_pylist()[:2] == [hashlib.sha256(good).hexdigest(), hashlib.sha256(bad).hexdigest()]
    assert out.column("width").to_pylist() == [120, None, None]
    assert out.column("pixels").null_count == 2


def test_threaded_decode_gives_the_same_table_in_row_order():
    images = [jpeg(60 + 7 * i, 50 + 3 * i, seed=i) for i in range(12)]
    images[3], images[7], images[9] = b"not an image", jpeg(90, 70)[:200], png("RGBA")
    n = len(images)
    table = pa.table(
        {
            "key": [f"s/{i}" for i in range(n)],
            "source": ["s"] * n,
            "url": [None] * n,
            "caption": ["a b c d"] * n,
            "image": images,
            "status": ["rejected" if i == 5 else "kept" for i in range(n)],
            "reject_reason": ["missing_caption" if i == 5 else None for i in range(n)],
            "reject_stage": ["read" if i == 5 else None for i in range(n)],
        },
        schema=RAW_SCHEMA,
    )
    one = DecodeStage(image_size=32).process_batch(table)
    three = DecodeStage(image_size=32, threads=3).process_batch(table)
    assert three.equals(one)
    reasons = three.column("reject_reason").to_pylist()
    assert (reasons[3], reasons[5], reasons[7]) == ("not_an_image", "missing_caption", "truncated_image")
    assert three.column("pixels").null_count == 3 and three.column("width").to_pylist()[9] == 50  # the PNG


def test_warnings_are_silenced_while_any_thread_decodes_and_restored_after():
    """Two threads decoding at once (an actor working on two shards) enter and leave the silenced
    section out of order; the filters the process had come back when the last one leaves."""
    import threading
    import warnings

    from curation.stages.decode import quiet_warnings

    before = list(warnings.filters)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def first():
        with quiet_warnings:
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second():
        first_in.wait(5)
        with quiet_warnings:
            second_in.set()
            first_out.wait(5)
            seen.append(warnings.filters[0])  # the first thread has left: still silenced

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == [("ignore", None, Warning, None, 0)]
    assert warnings.filters == before
