"""Real photographs (scikit-image's samples), with resized, recompressed, cropped and exact copies, served
by a loopback HTTP server and fetched through the URL-list path: pipelines/basic.yaml (no CLIP) keeps
every original and groups every copy with it; pipelines/demo.yaml (the built-in tiny CLIP, which knows
only drawn shapes) says the photos are outside what it knows, and its heads reject none of them."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

data = pytest.importorskip("skimage.data")
from PIL import Image  # noqa: E402

pytestmark = pytest.mark.ray

# Natural photographs (tests/dedup/test_near.py measured pHash distances on them), with a caption each.
PHOTOS = {
    "astronaut": "The astronaut Eileen Collins in her flight suit, photographed by NASA",
    "camera": "A man with a camera on a tripod in a park, an old grey photograph",
    "coffee": "A cup of coffee on a saucer with a spoon, seen from above",
    "chelsea": "Chelsea the cat looking up, a close portrait of her face",
    "rocket": "Launch photo of DSCOVR on Falcon 9 by SpaceX, the rocket rising over the pad",
    "coins": "Greek coins from Pompeii laid out in rows on a dark cloth",
    "clock": "A motion blurred clock on a wall, photographed with a slow shutter",
    "immunohistochemistry": "Immunohistochemical staining with hematoxylin counterstaining under a microscope",
    "retina": "The human retina photographed through the pupil with its blood vessels",
    "moon": "The surface of the moon with its craters, a grey telescope photograph",
}
COPIES = ("resized", "recompressed", "cropped", "exact")


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _copy(image: Image.Image, original: bytes, kind: str) -> bytes:
    w, h = image.size
    if kind == "resized":
        return _jpeg(image.resize((w // 2, h // 2), Image.Resampling.LANCZOS))
    if kind == "recompressed":
        return _jpeg(image, quality=30)
    if kind == "cropped":  # 3 % off every side
        return _jpeg(image.crop((int(0.03 * w), int(0.03 * h), w - int(0.03 * w), h - int(0.03 * h))))
    return original


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server name
        body = self.server.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def photo_site(tmp_path_factory):
    """(folder with the URL-list CSV, {url path: (photo, copy kind or None)}): every photo once as an
    original and two copies of it, the kinds taking turns; served on 127.0.0.1 until the module ends."""
    files: dict[str, bytes] = {}
    truth: dict[str, tuple[str, str | None]] = {}
    rows = []
    for i, (name, caption) in enumerate(PHOTOS.items()):
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        original = _jpeg(image)
        made = [(None, original)] + [
            (kind, _copy(image, original, kind)) for kind in (COPIES[i % 4], COPIES[(i + 1) % 4])
        ]
        for j, (kind, body) in enumerate(made):
            path = f"/photos/{name}-{kind or 'original'}.jpg"
            files[path], truth[path] = body, (name, kind)
            # Keys as img2dataset writes them, in list order: an exact or same-width copy ties with its
            # original on every quality dedup can see, and a tie keeps the smallest key (the original's).
            rows.append((f"{i:03d}{j}", path, caption))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files = files
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    folder = tmp_path_factory.mktemp("photo-urls")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    with open(folder / "photos.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "url", "caption"])
        writer.writerows((key, base + path, caption) for key, path, caption in rows)
    yield folder, truth
    server.shutdown()
    server.server_close()
    thread.join()


def _rows(output: Path) -> list[dict]:
    tables = [pq.read_table(p) for part in ("kept", "rejected") for p in sorted((output / part).glob("*.parquet"))]
    return pa.concat_tables(tables).to_pylist()


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


RUN_WITHOUT_TORCH = """
import json, sys
from curation.config import load_config
from curation.runner import run_job
cfg = load_config("pipelines/basic.yaml", ["download.allow_private_addresses=true", "run.num_cpus=2"])
result = run_job(cfg, sys.argv[1], sys.argv[2], log=lambda line: None)
heavy = sorted(m for m in ("torch", "open_clip", "torchvision") if m in sys.modules)
stages = sorted(result.manifest["timings"]["stages"])
print(json.dumps({"heavy_modules": heavy, "funnel": result.manifest["funnel"], "stages": stages}))
"""


def test_basic_pipeline_keeps_every_original_and_groups_every_copy(photo_site, tmp_path):
    folder, truth = photo_site
    out = tmp_path / "basic"
    # Its own process: the driver must not import torch (this test process has, for other tests).
    done = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_TORCH, str(folder), str(out)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heavy_modules"] == []  # no torch, in the driver or the stages it built
    assert "embed" not in report["stages"] and "privacy" in report["stages"]  # no embedding ran anywhere

    rows = _rows(out)
    assert len(rows) == len(truth) == report["funnel"]["input"]
    by_path = {_path(r["url"]): r for r in rows}
    originals = {name: path for path, (name, kind) in truth.items() if kind is None}
    for path, (name, kind) in truth.items():
        row = by_path[path]
        if kind is None:
            assert row["status"] == "kept", (path, row["reject_reason"])
    # Pairs: each copy rejected as a duplicate of its own original (dup_of chains resolve to a kept row).
    key_of = {path: row["key"] for path, row in by_path.items()}
    expected = {(key_of[p], key_of[originals[name]]) for p, (name, kind) in truth.items() if kind is not None}
    found = {(r["key"], r["dup_of"]) for r in rows if r["dup_of"]}
    precision = len(found & expected) / max(1, len(found))
    recall = len(found & expected) / len(expected)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall, sorted(expected - found), sorted(found - expected))
    assert all(r["reject_stage"] not in ("embed", "clip", "heads") for r in rows)  # no model rejected a row
    assert all(r["img_emb"] is None and r["clip_score"] is None for r in rows)  # the columns stay, all null
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["model_id"] == "none" and "domain" not in manifest
    assert (out / "report.html").is_file()


def test_demo_pipeline_says_photos_are_outside_its_model_and_its_heads_abstain(photo_site, tmp_path, ray_local):
    from curation.config import load_config
    from curation.runner import run_job

    folder, truth = photo_site
    out = tmp_path / "demo"
    lines: list[str] = []
    cfg = load_config("pipelines/demo.yaml", ["download.allow_private_addresses=true"])
    result = run_job(cfg, str(folder), str(out), log=lines.append)

    warnings = [line for line in lines if "unlike anything the built-in model was trained on" in line]
    assert len(warnings) == 1, lines
    scored = next(i for i, line in enumerate(lines) if line.startswith("scored shard"))
    assert lines.index(warnings[0]) == scored + 1  # with the first shard scored: early in the score phase
    page = (out / "report.html").read_text()
    assert 'id="domain-banner"' in page and page.index('id="domain-banner"') < page.index('id="funnel"')

    rows = _rows(out)
    assert not [r["key"] for r in rows if r["reject_stage"] == "heads"]
    embedded = [r for r in rows if r["img_emb"] is not None]
    assert embedded and all(r["watermark"] is not None for r in embedded)  # scored, not acted on
    crossed = [r for r in embedded if r["unsafe"] > 0.5 or r["watermark"] > 0.5 or r["aesthetic"] < 0.25]
    assert crossed  # without the guard, heads trained on drawn shapes would have rejected these photos
    assert result.manifest["domain"]["outside_rows"] == len(embedded)
