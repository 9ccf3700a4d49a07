"""report.html: written at the end of every run, true to the manifest, and a page that renders in a
real headless Chromium with no console errors."""

from __future__ import annotations

import io
import json
import re
from html import unescape

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.config import load_config
from curation.io.commit import Location
from curation.io.sources import Shard
from curation.manifest import shards_table, write_shards
from curation.report import write_report
from curation.runner import run_job

from .chromium_page import ChromiumPage, find_chromium


@pytest.fixture(scope="module")
def curated(ray_local, small_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    cfg = load_config("pipelines/demo.yaml", ["model.threads=1"])
    result = run_job(cfg, str(small_world[0]), str(out), log=lambda _: None)
    return out, result.manifest


@pytest.mark.ray
def test_every_run_writes_its_report_before_success(curated):
    out, _ = curated
    report, success = out / "report.html", out / "_SUCCESS"
    assert report.stat().st_size > 10_000 and report.stat().st_mtime_ns <= success.stat().st_mtime_ns


@pytest.mark.ray
def test_the_funnel_is_the_manifests(curated):
    out, manifest = curated
    page = (out / "report.html").read_text()
    funnel = manifest["funnel"]
    cards = re.search(r'<div class="cards">(.*?)</div></div>', page, re.S) or re.search(
        r'<div class="cards">(.*?)</section>', page, re.S
    )
    text = unescape(re.sub(r"<[^>]+>", " ", cards.group(1)))
    for number in (funnel["input"], funnel["kept"], funnel["rejected"]):
        assert f"{number:,}" in text
    for reason, count in funnel["rejected_by_reason"].items():
        assert re.search(rf"<td>\s*{reason}\s*</td>\s*<td class=\"n\">{count:,}</td>", page), reason


@pytest.mark.ray
def test_thresholds_are_listed_and_every_reason_has_a_sample_grid(curated):
    out, manifest = curated
    page = (out / "report.html").read_text()
    listed = re.findall(r'<tr class="threshold" data-column="([^"]+)">', page)
    assert {"clip_score", "unsafe", "watermark", "aesthetic"} <= set(listed)
    grids = set(re.findall(r'<div class="sample-grid" data-reason="([^"]+)">', page))
    assert grids == {"kept", *manifest["funnel"]["rejected_by_reason"]}
    assert page.count('src="data:image/png;base64,') >= 5  # the plots ...
    # ... and the thumbnails are embedded: the kept rows'; rejected/ holds no image bytes (rejected_images)
    assert page.count('src="data:image/jpeg;base64,') >= 20 and page.count(">not stored</div>") >= 30
    assert "<script" not in page and "http://" not in page and "https://" not in page  # static, offline


def _tiny_output(tmp_path, caption: str):
    """A hand-made output: one kept row whose caption is hostile HTML."""
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(buffer, format="JPEG")
    table = pa.table(
        {
            "key": ["00000/0"],
            "caption": [caption],
            "image": [buffer.getvalue()],
            "clip_score": pa.array([0.9], pa.float32()),
            "status": ["kept"],
            "reject_reason": pa.array([None], pa.string()),
            "reject_stage": pa.array([None], pa.string()),
        }
    )
    (tmp_path / "kept").mkdir()
    (tmp_path / "rejected").mkdir()
    pq.write_table(table, tmp_path / "kept" / "part-00000.parquet")
    pq.write_table(table.slice(0, 0), tmp_path / "rejected" / "part-00000.parquet")
    shard = Shard(shard_id="00000", url="file:///in/00000.tar", format="webdataset")
    result = {"shard_id": "00000", "rows": 1, "kept": 1, "rejected": 0, "reasons": {}}
    result.update(kept_sha256="", rejected_sha256="")  # not checked by the report
    manifest = {
        "shards_file": write_shards(Location.of(str(tmp_path)), shards_table([shard], [result])),
        "funnel": {"input": 1, "kept": 1, "rejected": 0, "rejected_by_reason": {}, "rejected_by_stage": {}},
        "config": load_config(None).model_dump(mode="json"),
        "timings": {"total_s": 1.0},
        "model_id": "test",
    }
    (tmp_path / "_manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def test_captions_are_escaped(tmp_path):
    out = _tiny_output(tmp_path, '<img src=x onerror="alert(1)"> a red square')
    page = open(write_report(str(out), str(tmp_path / "r.html"))).read()
    assert "<img src=x" not in page and "&lt;img src=x" in page


@pytest.mark.ray
def test_the_report_renders_in_headless_chromium(curated, tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium binary: apt-get install chromium (CI installs it)")
    out, _ = curated
    with ChromiumPage(binary) as page:
        page.load((out / "report.html").resolve().as_uri())
        assert page.errors == []
        assert page.evaluate("document.querySelectorAll('section').length") >= 5
        assert page.evaluate("document.body.innerText").count("Funnel") >= 1
        loaded = page.evaluate("Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length")
        assert loaded >= 10 and loaded == page.evaluate("document.images.length")
        png = page.screenshot(tmp_path / "report.png")
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float32)
    assert shot.shape[0] > 1000 and shot.std() > 20  # a full, non-blank page


@pytest.mark.ray
def test_captions_section_shows_languages_pii_and_faces(curated):
    out, manifest = curated
    page = (out / "report.html").read_text()
    section = re.search(r'<section id="captions">(.*?)</section>', page, re.S).group(1)
    languages = dict(re.findall(r"<tr><td>([^<]+)</td><td class=\"n\">([\d,]+)</td>", section))
    assert int(languages["en"].replace(",", "")) > 0  # English captions kept
    foreign = manifest["funnel"]["rejected_by_reason"].get("unwanted_language", 0)
    assert foreign > 0 and len(languages) > 1  # the planted non-English captions, by language
    assert "Personal data in captions" in section and 'id="pii"' in section
    assert "Faces: not looked for" in section  # the demo does not look for faces
