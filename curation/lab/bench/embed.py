"""Embed benchmark: the bare model forward against the embedding stage inside the pipeline's actor pool,
on the same images, model, batch size, device and precision.

Bare: pixels already on the host as a uint8 tensor, tokens made beforehand; per batch one host-to-device
copy, normalisation, `encode_image` and `encode_text` under the configured autocast, and the
embeddings copied back (the least any embedding job must do). Pipeline: Arrow blocks of decoded pixels
and captions go through Ray Data into the same actor pool `curate run` builds; the stage's own time
(tokenising, copies, heads, building the Arrow columns) is summed over the rows, so the headline
ratio = stage img/s (per actor) / bare img/s is not diluted by the actors' start-up. The wall-clock
rate of the whole Ray run, start-up included, is printed as well.

Pictures: the decode stage's output for web-sized photographs (see bench/common.py), cycled.
`--pretrained none` builds the architecture with random weights: throughput does not depend on them.
"""

from __future__ import annotations

import time

import click
import numpy as np
import pyarrow as pa

from curation.allocator import tune_this_process
from curation.lab.bench.common import captions, json_line, web_jpeg_pool

STAGE_COLUMN = "_seconds:embed"


def _pixel_pool(size: int) -> list[bytes]:
    from curation.stages.decode import decode_image

    pool, _ = web_jpeg_pool(seed=0, size=16)
    return [decode_image(data, size=size, max_pixels=1 << 30).pixels for data in pool]


def model_config(arch: str, pretrained: str | None, device: str, precision: str, batch_size: int, actors, threads: int):
    from curation.config import ModelConfig

    num_gpus = 1.0 if device == "cuda" else 0.0
    return ModelConfig(
        arch=arch,
        pretrained=pretrained,
        device=device,
        precision=precision,
        batch_size=batch_size,
        actors=actors,
        num_gpus=num_gpus,
        threads=threads,
    )


def bare_forward(model_cfg, pixels: list[bytes], texts: list[str], size: int) -> dict:
    """img/s of the bare forward pass (image and text towers) over the images, after one warm-up batch."""
    import torch

    from curation.models.clip import load_clip, prepare_images

    tune_this_process()  # as the job's workers run (curation/allocator.py)
    torch.set_num_threads(model_cfg.threads)
    clip = load_clip(model_cfg)
    step = model_cfg.batch_size
    batches = []
    for start in range(0, len(pixels), step):
        array = np.frombuffer(b"".join(pixels[start : start + step]), np.uint8).reshape(-1, size, size, 3)
        host = torch.from_numpy(array.copy())
        batches.append(
            (host.pin_memory() if clip.device.type == "cuda" else host, clip.tokenizer(texts[start : start + step]))
        )

    @torch.inference_mode()
    def run(selected) -> None:
        for host, tokens in selected:
            images = prepare_images(host.to(clip.device, non_blocking=True), clip.mean, clip.std)
            with torch.autocast(clip.device.type, dtype=clip.amp_dtype, enabled=clip.amp_dtype is not None):
                image = clip.model.encode_image(images)
                text = clip.model.encode_text(tokens.to(clip.device, non_blocking=True))
            image.float().cpu(), text.float().cpu()

    run(batches[:1])
    start = time.perf_counter()
    run(batches)
    seconds = time.perf_counter() - start
    return {
        "img_s": len(pixels) / seconds,
        "seconds": seconds,
        "device": str(clip.device),
        "amp": str(clip.amp_dtype).removeprefix("torch.") if clip.amp_dtype else "fp32",
    }


def stage_in_pipeline(model_cfg, pixels: list[bytes], texts: list[str], size: int, block_rows: int) -> dict:
    from curation.config import Config
    from curation.models.clip import BUILTIN, model_info
    from curation.phases.score import run_actor_stages, start_ray
    from curation.stages.embed import EmbedStage

    info = model_info(model_cfg)
    # The actor only embeds here (pixels come decoded), as it does behind decoding tasks: one call at a time.
    model_cfg = model_cfg.model_copy(update={"calls_per_actor": 1})
    # The builtin heads, where they fit: they were trained on the shipped tiny CLIP's embeddings.
    builtin = model_cfg.arch == "curation-tiny" and model_cfg.pretrained == BUILTIN
    cfg = Config(model=model_cfg, heads=Config().heads if builtin else ())
    stage = EmbedStage(model=model_cfg, image_size=size, embed_dim=info.embed_dim, heads=cfg.heads)
    n = len(pixels)
    blocks = [
        pa.table(
            {
                "key": [f"b/{i:07d}" for i in range(start, min(n, start + block_rows))],
                "caption": texts[start : start + block_rows],
                "pixels": pa.array(pixels[start : start + block_rows], pa.binary()),
                "status": ["kept"] * len(texts[start : start + block_rows]),
            }
        )
        for start in range(0, n, block_rows)
    ]
    start_ray(cfg)
    wall = time.perf_counter()
    out = run_actor_stages(cfg, [stage], blocks, ["key", STAGE_COLUMN])
    wall = time.perf_counter() - wall
    stage_seconds = float(np.sum(out.column(STAGE_COLUMN).to_numpy()))
    actors = 1 if model_cfg.actors == "auto" and model_cfg.num_gpus == 0 else model_cfg.actors
    return {
        "rows": out.num_rows,
        "stage_seconds": stage_seconds,
        "wall_seconds": wall,
        "stage_img_s": out.num_rows / stage_seconds,
        "wall_img_s": out.num_rows / wall,
        "actors": actors,
    }


def run_embed_bench(
    n: int,
    arch: str,
    pretrained: str | None,
    device: str,
    precision: str,
    batch_size: int,
    actors="auto",
    threads: int = 2,
    log=None,
) -> dict:
    from curation.models.clip import model_info

    model_cfg = model_config(arch, pretrained, device, precision, batch_size, actors, threads)
    size = model_info(model_cfg).image_size
    pool = _pixel_pool(size)
    pixels = [pool[i % len(pool)] for i in range(n)]
    texts = captions(n)
    bare = bare_forward(model_cfg, pixels, texts, size)
    staged = stage_in_pipeline(model_cfg, pixels, texts, size, block_rows=max(batch_size, 4 * batch_size))
    ratio = staged["stage_img_s"] / bare["img_s"]
    if log is not None:
        log(
            f"{arch} ({pretrained or 'random weights'}) on {bare['device']}, autocast {bare['amp']}, batch {batch_size}, {n} images {size}px"
        )
        log(f"  bare forward (image + text towers)  {bare['img_s']:10.1f} img/s")
        log(f"  embed stage in the Ray pipeline     {staged['stage_img_s']:10.1f} img/s per actor (stage time)")
        log(f"  whole Ray run incl. actor start-up  {staged['wall_img_s']:10.1f} img/s wall")
        log(f"  ratio stage / bare                  {ratio:10.3f}")
    return {
        "bench": "embed",
        "arch": arch,
        "pretrained": pretrained,
        "device": bare["device"],
        "precision": bare["amp"],
        "batch_size": batch_size,
        "n": n,
        "bare_img_s": bare["img_s"],
        "stage_img_s": staged["stage_img_s"],
        "pipeline_wall_img_s": staged["wall_img_s"],
        "ratio": ratio,
    }


@click.command("embed")
@click.option("--n", default=2048, show_default=True, type=click.IntRange(min=1), help="Images.")
@click.option(
    "--arch", default="curation-tiny", show_default=True, help="open_clip architecture (e.g. ViT-B-32, ViT-L-14)."
)
@click.option(
    "--pretrained",
    default="builtin",
    show_default=True,
    help="builtin, a tag, a .safetensors path, or none (random weights).",
)
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "fp32", "bf16", "fp16"]))
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=1), help="Torch threads on CPU.")
def embed_command(
    n: int, arch: str, pretrained: str, device: str, precision: str, batch_size: int, threads: int
) -> None:
    """Bare model forward img/s vs the embedding stage inside the pipeline, same images and model."""
    pretrained = None if pretrained.lower() in ("none", "null", "") else pretrained
    figures = run_embed_bench(n, arch, pretrained, device, precision, batch_size, threads=threads, log=click.echo)
    click.echo(json_line(figures))
