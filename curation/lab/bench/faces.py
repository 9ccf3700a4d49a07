"""Face stage benchmark: milliseconds per image and false positives.

Times `FaceStage.process_batch` (blur mode, one OpenCV thread) on web-sized photographs (bench/common.py:
scikit-image sample photos, long side 640-1600 px; one in eight is the astronaut, the only one with a
face) and on small synthetic scenes (curation.lab.synth.world, short side 96-192 px, as the demo world
draws them), and counts the scenes in which a face is found: each one is a false positive. Times are
CPU seconds of this single-threaded process per image, as in bench/decode.py. Headline ratio: the face
stage's CPU time per photo over the decode stage's on the same photos (what turning faces on costs, in
decodes).
"""

from __future__ import annotations

import hashlib
import time

import click
import numpy as np
import pyarrow as pa

from curation.lab.bench.common import json_line, web_jpegs

BATCH = 256


def kept_table(images: list[bytes]) -> pa.Table:
    """Kept records with just the columns the face stage reads and writes."""
    n = len(images)
    return pa.table(
        {
            "key": [f"f/{i:06d}" for i in range(n)],
            "image": pa.array(images, pa.binary()),
            "sha256": [hashlib.sha256(data).hexdigest() for data in images],
            "status": ["kept"] * n,
            "reject_reason": pa.nulls(n, pa.string()),
            "reject_stage": pa.nulls(n, pa.string()),
        }
    )


def synthetic_scenes(n: int, seed: int = 0) -> list[bytes]:
    """`n` scenes of the synthetic world at its usual sizes, as JPEG."""
    from curation.lab.synth.world import encode_jpeg, sample_scene, sample_size

    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(n):
        width, height = sample_size(rng)
        scenes.append(encode_jpeg(sample_scene(rng).render(width, height)))
    return scenes


def _run(stage, images: list[bytes]) -> tuple[dict, pa.Table]:
    tables = [kept_table(images[i : i + BATCH]) for i in range(0, len(images), BATCH)]
    stage.process_batch(tables[0].slice(0, 4))  # warm-up: first-call costs are not throughput
    wall, cpu = time.perf_counter(), time.process_time()
    out = pa.concat_tables([stage.process_batch(table) for table in tables])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    faces = out.column("faces").to_numpy(zero_copy_only=False)
    unchanged = sum(a == b for a, b in zip(images, out.column("image").to_pylist()))
    figures = {
        "n": len(images),
        "ms_per_image_cpu": 1e3 * cpu / len(images),
        "ms_per_image_wall": 1e3 * wall / len(images),
        "with_faces": int((faces > 0).sum()),
        "bytes_unchanged": int(unchanged),
    }
    return figures, out


def decode_ms_per_image(images: list[bytes], size: int = 224) -> float:
    """CPU ms per image of the decode stage on the same photos (the headline ratio's yardstick)."""
    from curation.stages.decode import DecodeStage

    stage = DecodeStage(image_size=size)
    table = kept_table(images).append_column("caption", pa.array(["a photo"] * len(images)))
    stage.process_batch(table.slice(0, 4))
    cpu = time.process_time()
    stage.process_batch(table)
    return 1e3 * (time.process_time() - cpu) / len(images)


def run_faces_bench(photos: int, scenes: int, seed: int = 0, log=None) -> dict:
    from curation.stages.faces import FaceStage

    stage = FaceStage(faces="blur")
    stage.setup()
    jpegs, kind = web_jpegs(photos, seed)
    photo_figures, _ = _run(stage, list(jpegs))
    decode_ms = decode_ms_per_image(list(jpegs))
    scene_figures, _ = _run(stage, synthetic_scenes(scenes, seed))
    if log is not None:
        log(f"{photos} web-sized JPEGs ({kind}), long side 640-1600 px:")
        log(
            f"  {photo_figures['ms_per_image_cpu']:.1f} ms/image CPU, {photo_figures['with_faces']} with faces; "
            f"the decode stage on the same photos (224 px): {decode_ms:.1f} ms/image"
        )
        log(f"{scenes} synthetic scenes, short side 96-192 px:")
        log(
            f"  {scene_figures['ms_per_image_cpu']:.2f} ms/image CPU, {scene_figures['with_faces']} false positives, "
            f"{scene_figures['bytes_unchanged']} byte-identical"
        )
    figures = {"bench": "faces", "images": kind}
    figures.update({f"photos_{k}": v for k, v in photo_figures.items()})
    figures.update({f"scenes_{k}": v for k, v in scene_figures.items()})
    figures["decode_ms_per_image_cpu"] = decode_ms
    figures["ratio"] = photo_figures["ms_per_image_cpu"] / decode_ms  # face stage cost in decodes
    return figures


@click.command("faces")
@click.option("--photos", default=200, show_default=True, type=click.IntRange(min=1), help="Web-sized photographs.")
@click.option("--scenes", default=500, show_default=True, type=click.IntRange(min=1), help="Synthetic scenes.")
@click.option("--seed", default=0, show_default=True, type=int)
def faces_command(photos: int, scenes: int, seed: int) -> None:
    """Face stage ms per image on photographs and synthetic scenes, and its false positives on scenes."""
    click.echo(json_line(run_faces_bench(photos, scenes, seed, log=click.echo)))
