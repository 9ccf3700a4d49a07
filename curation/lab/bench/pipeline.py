"""Pipeline benchmark: the real Ray job end to end against a bare decode+forward loop on the same images.

Input: `n` web-sized photographs (see bench/common.py) as img2dataset Parquet shards with image bytes.
The job is `curate run` with the given config (default: the demo's — tiny CLIP, heads, clip filter,
exact/near/semantic dedup) on a Ray that is already running, as a cluster is: read, decode, filters,
embedding actors, the commit of scored shards, dedup and the final write all count. The bare loop,
in this one process, decodes each image with the same decoder and embeds it with the same model and
batch size — no Parquet, no Ray, no heads, no dedup, nothing written. Headline ratio: job img/s / bare
img/s. The per-stage time split of the score phase comes from the job's manifest.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import click

from curation.allocator import tune_this_process
from curation.lab.bench.common import captions, json_line, web_jpegs, write_parquet_shards


def bare_decode_forward(cfg, images) -> dict:
    """img/s of decode + forward in one process (after a warm-up batch), decoding as the job does: on
    the CPU, or with `decode.device=gpu` by the device decoder on the model's device."""
    import numpy as np
    import torch

    from curation.models.clip import load_clip, model_info, prepare_images
    from curation.stages.decode import DecodedImage, decode_image

    size = model_info(cfg.model).image_size
    tune_this_process()  # the allocator settings the job's workers run with (curation/allocator.py)
    torch.set_num_threads(cfg.model.threads)
    clip = load_clip(cfg.model)
    texts = captions(len(images))
    step = cfg.model.batch_size
    if cfg.decode.device == "gpu":  # the job's device decoder, on the model's device
        from curation.stages.gpu_decode import GpuDecodeStage

        device_decoder = GpuDecodeStage(image_size=size, max_pixels=cfg.decode.max_pixels, device=str(clip.device))
        decode = lambda datas: device_decoder.decode_all(datas, [True] * len(datas))  # noqa: E731
    else:
        decode = lambda datas: [decode_image(data, size=size, max_pixels=cfg.decode.max_pixels) for data in datas]  # noqa: E731

    @torch.inference_mode()
    def run(count: int) -> None:
        for start in range(0, count, step):
            decoded = decode(images[start : start + step])
            pixels = [d.pixels for d in decoded if isinstance(d, DecodedImage)]
            array = np.frombuffer(b"".join(pixels), np.uint8).reshape(-1, size, size, 3)
            batch = prepare_images(torch.from_numpy(array.copy()).to(clip.device), clip.mean, clip.std)
            tokens = clip.tokenizer(texts[start : start + step]).to(clip.device)
            with torch.autocast(clip.device.type, dtype=clip.amp_dtype, enabled=clip.amp_dtype is not None):
                clip.model.encode_image(batch).float().cpu()
                clip.model.encode_text(tokens).float().cpu()

    run(min(step, len(images)))
    start = time.perf_counter()
    run(len(images))
    seconds = time.perf_counter() - start
    return {"img_s": len(images) / seconds, "seconds": seconds}


def run_pipeline_bench(n: int, shard_size: int, overrides: tuple[str, ...] = (), seed: int = 0, log=None) -> dict:
    from curation.config import load_config
    from curation.phases.score import start_ray
    from curation.runner import run_job

    cfg = load_config(None, overrides)
    images, kind = web_jpegs(n, seed)
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        write_parquet_shards(work / "input", images, shard_size)
        bare = bare_decode_forward(cfg, images)
        start_ray(cfg)
        start = time.perf_counter()
        result = run_job(cfg, str(work / "input"), str(work / "output"), log=lambda line: None)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    timings = result.manifest["timings"]
    stages = timings.get("stages", {})
    job_img_s = n / seconds
    ratio = job_img_s / bare["img_s"]
    if log is not None:
        log(f"{n} JPEGs ({kind}), long side 640-1600 px, {-(-n // shard_size)} Parquet shards; model {cfg.model.arch}")
        log(f"  bare decode+forward loop, one process  {bare['img_s']:8.1f} img/s ({bare['seconds']:.1f} s)")
        log(f"  Ray job end to end                     {job_img_s:8.1f} img/s ({seconds:.1f} s)")
        log(f"  ratio job / bare                       {ratio:8.3f}")
        log("  phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items() if isinstance(v, (int, float))))
        total = sum(stages.values()) or 1.0
        log(
            "  score-phase stage time (summed over workers): "
            + ", ".join(
                f"{k} {v:.1f} s ({100 * v / total:.0f}%)" for k, v in sorted(stages.items(), key=lambda kv: -kv[1])
            )
        )
    return {
        "bench": "pipeline",
        "n": n,
        "shards": -(-n // shard_size),
        "arch": cfg.model.arch,
        "bare_img_s": bare["img_s"],
        "job_img_s": job_img_s,
        "job_seconds": seconds,
        "phases": {k: v for k, v in timings.items() if isinstance(v, (int, float))},
        "stages": stages,
        "kept": result.manifest["funnel"]["kept"],
        "ratio": ratio,
    }


@click.command("pipeline")
@click.option(
    "--n",
    default=20000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Images (enough that the job's fixed costs — actor start-up, Ray Data phases, report — do not dominate).",
)
@click.option("--shard-size", default=500, show_default=True, type=click.IntRange(min=1), help="Rows per input shard.")
@click.option(
    "--set", "overrides", multiple=True, metavar="a.b=VALUE", help="Config override for the job (repeatable)."
)
@click.option("--seed", default=0, show_default=True, type=int)
def pipeline_command(n: int, shard_size: int, overrides: tuple[str, ...], seed: int) -> None:
    """End-to-end img/s of the Ray job vs a bare decode+forward loop on the same synthetic JPEGs."""
    click.echo(json_line(run_pipeline_bench(n, shard_size, overrides, seed, log=click.echo)))
