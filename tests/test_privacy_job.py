"""End to end on a local Ray: caption hygiene, PII redaction, language and face blur inside a real job,
on an img2dataset Parquet shard holding a real photograph with a face (scikit-image's astronaut)."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

from curation.config import load_config
from curation.io.readers import image_values
from curation.lab.synth.img2dataset import Sample, write_parquet_shard
from curation.lab.synth.world import encode_jpeg, sample_scene
from curation.runner import run_job

pytestmark = pytest.mark.ray


def astronaut_jpeg() -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


CAPTIONS = {
    "astronaut": "an astronaut in a white suit, &amp; a <b>flag</b> — mail jane.doe@example.org",
    "scene": "a photo of a red square, call +44 20 7946 0958 or see 221 Baker Street",
    "german": "zwei rote gestreifte Quadrate auf einem blauen Hintergrund",
    "boilerplate": "IMG_1234.JPG",
    "plain": "two blue dotted circles on a yellow background",
}


@pytest.fixture(scope="module")
def privacy_run(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("privacy")
    rng = np.random.default_rng(5)
    payloads = {name: encode_jpeg(sample_scene(rng).render(160, 128)) for name in CAPTIONS}
    payloads["astronaut"] = astronaut_jpeg()
    samples = [
        Sample(
            key=f"0000000{i}",
            caption=CAPTIONS[name],
            payload=payloads[name],
            size=Image.open(io.BytesIO(payloads[name])).size,
        )
        for i, name in enumerate(CAPTIONS)
    ]
    (root / "input").mkdir()
    write_parquet_shard(root / "input", "00000", samples)
    # Heads and the clip_score threshold off: this job is about captions and faces, and the tiny CLIP
    # knows shapes, not astronauts.
    cfg = load_config(
        "pipelines/demo.yaml", ["model.threads=1", "privacy.faces=blur", "clip.min_score=null", "heads=[]"]
    )
    result = run_job(cfg, str(root / "input"), str(root / "out"), log=lambda _: None)
    columns = ["key", "caption", "image", "sha256", "faces", "pii", "lang", "status", "reject_reason", "reject_stage"]
    rows = {}
    for part in ("kept", "rejected"):
        table = pads.dataset(str(root / "out" / part)).to_table(columns=columns)
        table = table.set_column(columns.index("image"), "image", image_values(table.column("image")))  # the bytes
        for row in table.to_pylist():
            rows[row["key"]] = row
    by_name = {name: rows[f"00000/0000000{i}"] for i, name in enumerate(CAPTIONS)}  # key: shard/sample
    return by_name, payloads, result


def test_every_row_is_kept_or_rejected(privacy_run):
    rows, _, result = privacy_run
    funnel = result.manifest["funnel"]
    assert len(rows) == funnel["input"] == funnel["kept"] + funnel["rejected"] == len(CAPTIONS)


def test_astronaut_face_is_blurred_caption_cleaned_and_redacted(privacy_run):
    rows, payloads, _ = privacy_run
    row = rows["astronaut"]
    assert row["status"] == "kept" and row["faces"] >= 1
    assert row["image"] != payloads["astronaut"]  # new bytes: the face is blurred
    assert row["sha256"] == hashlib.sha256(payloads["astronaut"]).hexdigest()  # the source's identity
    blurred, original = (
        np.asarray(Image.open(io.BytesIO(b)).convert("L"), np.float32) for b in (row["image"], payloads["astronaut"])
    )
    assert blurred.shape == original.shape
    face = (slice(66, 162), slice(175, 271))  # where the detector puts the astronaut's face (x 175-271, y 66-162)
    assert np.abs(blurred[face] - original[face]).mean() > 8
    assert np.abs(blurred[400:, :100] - original[400:, :100]).mean() < 3  # far from the face: re-encoding only
    assert row["caption"] == "an astronaut in a white suit, & a flag — mail [EMAIL]"
    assert row["pii"] == ["email"] and row["lang"] == "en"


def test_faceless_scene_keeps_its_bytes_and_loses_phone_and_address(privacy_run):
    rows, payloads, _ = privacy_run
    row = rows["scene"]
    assert row["status"] == "kept" and row["faces"] == 0 and row["image"] == payloads["scene"]
    assert row["caption"] == "a photo of a red square, call [PHONE] or see [ADDRESS]"
    assert row["pii"] == ["phone", "street_address"]
    assert rows["plain"]["status"] == "kept" and rows["plain"]["pii"] == [] and rows["plain"]["faces"] == 0


def test_foreign_and_boilerplate_captions_are_rejected_with_their_reason(privacy_run):
    rows, _, _ = privacy_run
    german, boilerplate = rows["german"], rows["boilerplate"]
    assert (german["status"], german["reject_reason"], german["reject_stage"]) == (
        "rejected",
        "unwanted_language",
        "language",
    )
    assert german["lang"] == "de" and german["faces"] is None  # rejected rows are not looked at for faces
    assert (boilerplate["reject_reason"], boilerplate["reject_stage"]) == ("boilerplate_caption", "caption")
