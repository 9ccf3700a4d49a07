"""The throughput benchmarks at tiny sizes: each runs for real and ends with one parseable JSON line."""

import io
import json

import pytest
from click.testing import CliRunner
from PIL import Image

from curation.cli import main
from curation.lab.bench.common import LONG_SIDE, TreeMemory, unique_copy, web_jpegs


def last_json(args: list[str]) -> tuple[dict, list[str]]:
    result = CliRunner().invoke(main, ["bench", *args])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) >= 2  # a readable summary first
    return json.loads(lines[-1]), lines


def test_web_jpegs_are_web_sized_photographs_with_distinct_bytes():
    images, kind = web_jpegs(60, seed=3)
    assert "photograph" in kind
    assert len(images) == 60 and len({bytes(b) for b in images}) == 60
    sizes = [Image.open(io.BytesIO(data)).size for data in images[:48]]
    assert all(LONG_SIDE[0] <= max(size) <= LONG_SIDE[1] for size in sizes)
    tagged = Image.open(io.BytesIO(unique_copy(images.pool[0], 7)))
    tagged.load()  # the comment segment keeps the file a valid JPEG
    assert tagged.size == Image.open(io.BytesIO(images.pool[0])).size


def test_tree_memory_counts_children():
    import subprocess
    import sys

    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; x = bytearray(200 << 20); x[::4096] = b'1' * len(x[::4096]); time.sleep(3)",
        ]
    )
    try:
        with TreeMemory(interval=0.1) as memory:
            child.wait()
    finally:
        child.kill()
    assert memory.peak_bytes > 200 << 20


def test_bench_decode():
    figures, lines = last_json(["decode", "--n", "6", "--size", "32", "--torch-device", "cpu"])
    assert figures["bench"] == "decode" and figures["n"] == 6
    assert figures["ours_img_s_per_core"] > 0 and figures["plain_pil_img_s_per_core"] > 0
    assert figures["device_img_s_per_core"] > 0
    assert figures["ratio"] == pytest.approx(
        figures["ours_img_s_per_core"] / figures["plain_pil_img_s_per_core"], rel=1e-3, abs=1e-4
    )
    assert any("plain_pil" in line for line in lines)


def test_bench_faces():
    figures, lines = last_json(["faces", "--photos", "8", "--scenes", "24"])
    assert figures["bench"] == "faces" and figures["photos_n"] == 8 and figures["scenes_n"] == 24
    assert figures["photos_with_faces"] >= 1  # the pool's first photo is the astronaut
    assert figures["scenes_with_faces"] == 0 and figures["scenes_bytes_unchanged"] == 24
    assert figures["ratio"] == pytest.approx(
        figures["photos_ms_per_image_cpu"] / figures["decode_ms_per_image_cpu"], rel=1e-3
    )


@pytest.mark.ray
def test_bench_embed(ray_local):
    figures, _ = last_json(["embed", "--n", "24", "--batch-size", "8", "--threads", "1"])
    assert figures["bench"] == "embed" and figures["device"] == "cpu" and figures["precision"] == "fp32"
    assert figures["bare_img_s"] > 0 and figures["stage_img_s"] > 0 and figures["pipeline_wall_img_s"] > 0
    assert figures["ratio"] == pytest.approx(figures["stage_img_s"] / figures["bare_img_s"], rel=1e-3, abs=1e-4)


@pytest.mark.ray
@pytest.mark.parametrize(
    "decoding", ["decode.placement=tasks", "decode.device=gpu"]
)  # the device decoder runs on CPU here
def test_bench_pipeline(ray_local, decoding):
    figures, lines = last_json(
        [
            "pipeline",
            *("--n", "24", "--shard-size", "12", "--rounds", "2"),
            *("--set", "model.batch_size=8", "--set", decoding),
        ]
    )
    assert figures["bench"] == "pipeline" and figures["shards"] == 2 and figures["rounds"] == 2
    assert figures["job_img_s"] > 0 and figures["bare_img_s"] > figures["bare_write_img_s"] > 0
    for side in ("bare", "bare_write", "job"):  # the medians of the interleaved rounds
        rounds = figures["rounds_img_s"][side]
        key = {"bare": "bare_img_s", "bare_write": "bare_write_img_s", "job": "job_img_s"}[side]
        assert len(rounds) == 2 and figures[key] == pytest.approx(sum(rounds) / 2, abs=0.1)
    assert {"read", "decode", "embed", "commit"} <= set(figures["stages"])
    assert all(seconds >= 0 for seconds in figures["stages"].values())
    assert figures["stages"]["decode"] > 0 and figures["stages"]["embed"] > 0
    assert figures["ratio"] == pytest.approx(figures["job_img_s"] / figures["bare_img_s"], rel=1e-3, abs=1e-4)
    assert figures["ratio_write"] == pytest.approx(
        figures["job_img_s"] / figures["bare_write_img_s"], rel=1e-3, abs=1e-4
    )
    assert 0 < figures["write_share"] < 1
    assert figures["write_share"] == pytest.approx(
        figures["phases"]["write_s"] / figures["job_seconds"], rel=1e-3, abs=1e-4
    )
    assert any("stage time" in line for line in lines) and sum("round" in line for line in lines) >= 2


@pytest.mark.ray
@pytest.mark.slow
def test_bench_memory():
    figures, lines = last_json(["memory", "--n", "6", "--factor", "2", "--shard-size", "6"])
    assert figures["bench"] == "memory" and figures["factor"] == 2
    # a driver with Ray's daemons and workers takes hundreds of MiB: the sampler saw the whole tree
    assert figures["peak_gib_n"] > 0.3 and figures["peak_gib_10n"] > 0.3
    assert figures["ratio"] == pytest.approx(figures["peak_gib_10n"] / figures["peak_gib_n"], rel=1e-2)
