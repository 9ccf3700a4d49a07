"""Decode benchmark: the decode stage's images per CPU-second against a plain PIL loop on the same
web-sized JPEGs (long side 640-1600 px; see bench/common.py for the pictures).

Ours is `DecodeStage.process_batch` on Arrow batches: sha256, reduced-scale JPEG decode (draft mode),
EXIF orientation, pHash, centre crop and one bicubic resize to the model size. The plain loop is what
most loaders do: `Image.open(...).convert("RGB").resize((size, size))` at full scale, nothing else.
Where img2dataset is importable its resizer (center_crop, re-encoding as img2dataset does) is timed
too; with `--torch-device` the device decode path (GpuDecodeStage) as well.

Rates are per core: images divided by the CPU seconds of this single-threaded process, which the
other processes on a shared machine disturb far less than wall-clock time (both are printed).
"""

from __future__ import annotations

import time

import click
import pyarrow as pa

from curation.lab.bench.common import json_line, plain_pil, web_jpegs

BATCH = 256


def _table(images: list[bytes]) -> pa.Table:
    from curation.io.readers import RAW_SCHEMA

    n = len(images)
    return pa.table(
        {
            "key": [f"b/{i:06d}" for i in range(n)],
            "source": ["b"] * n,
            "url": [None] * n,
            "caption": ["a photo"] * n,
            "image": images,
            "status": ["kept"] * n,
            "reject_reason": [None] * n,
            "reject_stage": [None] * n,
        },
        schema=RAW_SCHEMA,
    )


def _rate(run, n: int) -> dict:
    run()  # warm-up on the same images: first-call costs are not throughput
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"img_s_per_core": n / max(cpu, 1e-9), "img_s_wall": n / max(wall, 1e-9), "cpu_s": cpu}


def _img2dataset_resizer(size: int):
    try:
        from img2dataset.resizer import Resizer
    except ImportError:
        return None
    return Resizer(image_size=size, resize_mode="center_crop", resize_only_if_bigger=False)


def run_decode_bench(n: int, size: int, seed: int = 0, torch_device: str | None = None, log=None) -> dict:
    import io

    jpegs, kind = web_jpegs(n, seed)
    images = list(jpegs)  # in memory: the loops time decoding only
    from curation.stages.decode import DecodeStage

    tables = [_table(images[i : i + BATCH]) for i in range(0, n, BATCH)]
    stage = DecodeStage(image_size=size)

    def ours() -> None:
        for table in tables:
            stage.process_batch(table)

    def plain() -> None:
        for data in images:
            plain_pil(data, size)

    figures = {"bench": "decode", "n": n, "size": size, "images": kind}
    results = {"ours": _rate(ours, n), "plain_pil": _rate(plain, n)}
    resizer = _img2dataset_resizer(size)
    if resizer is not None:
        results["img2dataset"] = _rate(lambda: [resizer(io.BytesIO(data)) for data in images], n)
    if torch_device:
        import torch

        from curation.stages.gpu_decode import GpuDecodeStage

        torch.set_num_threads(1)
        device_stage = GpuDecodeStage(image_size=size, device=torch_device)

        def on_device() -> None:
            for table in tables:
                device_stage.process_batch(table)
            if torch_device.startswith("cuda"):
                torch.cuda.synchronize()

        results["device"] = _rate(on_device, n)
        wall = results["device"]["img_s_wall"]
        figures["device_img_s_wall"] = wall
    if log is not None:
        log(f"{n} JPEGs ({kind}), long side 640-1600 px, resized to {size}x{size}; single-threaded:")
        for name, r in results.items():
            log(
                f"  {name:<12} {r['img_s_per_core']:8.1f} img/s per core ({r['img_s_wall']:.1f} img/s wall, {r['cpu_s']:.2f} CPU s)"
            )
        log("  (shared machines are noisy: per-core rates use CPU time, wall rates include waiting for a core)")
    for name, r in results.items():
        figures[f"{name}_img_s_per_core"] = r["img_s_per_core"]
    if "img2dataset" in results:
        figures["ratio_vs_img2dataset"] = results["ours"]["img_s_per_core"] / results["img2dataset"]["img_s_per_core"]
    figures["ratio"] = results["ours"]["img_s_per_core"] / results["plain_pil"]["img_s_per_core"]
    return figures


@click.command("decode")
@click.option("--n", default=400, show_default=True, type=click.IntRange(min=1), help="Images.")
@click.option("--size", default=224, show_default=True, type=click.IntRange(min=8), help="Model input size.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--torch-device", default=None, help="Also time the device decode path on this torch device (cpu, cuda).")
def decode_command(n: int, size: int, seed: int, torch_device: str | None) -> None:
    """Decode+preprocess img/s per core: the decode stage vs a plain PIL open+convert+resize loop."""
    click.echo(json_line(run_decode_bench(n, size, seed, torch_device, log=click.echo)))
