"""Pipeline benchmark: the real Ray job end to end against bare loops on the same images.

Input: `n` web-sized photographs (see bench/common.py) as img2dataset Parquet shards with image bytes.
The job is `curate run` with the given config (default: the demo's — tiny CLIP, heads, clip filter,
exact/near/semantic dedup) on a Ray that is already running, as a cluster is: read, decode, filters,
embedding actors, the commit of scored shards, dedup and the final write all count.

The bare loop runs in this one process, shard after shard: it reads the shard's Parquet, decodes each
image with the job's decoder and embeds image and caption with the same model and batch size, then writes
what the job wrote for it (kept/ and rejected/ Parquet: key, caption, url, image as Hugging Face's
struct, size, sha256, embeddings, clip_score, status; the rows the job kept with their image bytes, the
others without, as output.rejected_images defaults) — no Ray, no heads, no dedup. Two figures come from it:

- bare decode+forward: img/s over the seconds spent decoding and embedding alone (the old bare loop);
- bare decode+forward+write: img/s over the whole loop, reading and writing included.

So `job / bare` is what the pipeline costs over the model's own work, and `job / bare+write` what it costs
over the model's work plus the output I/O any job must do. On a shared machine other processes slow one
side more than the other: `--rounds` runs job, bare, job, bare, ... interleaved (each bare loop writes
the split of the job before it) and reports the median of each side (the ratios are of the medians). The write phase's share is its seconds (the manifest's
`write_s`) over the seconds of the median job. The per-stage time split of the score phase comes from the job's manifest.
"""

from __future__ import annotations

import hashlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import click
import pyarrow.parquet as pq

from curation.allocator import tune_this_process
from curation.lab.bench.common import json_line, web_jpegs, write_parquet_shards


class BareLoop:
    """Decode + forward (+ the output write) in this process, with the model loaded once."""

    def __init__(self, cfg) -> None:
        import torch

        from curation.models.clip import load_clip, model_info

        tune_this_process()  # the allocator settings the job's workers run with (curation/allocator.py)
        torch.set_num_threads(cfg.model.threads)
        self.cfg, self.clip = cfg, load_clip(cfg.model)
        self.size = model_info(cfg.model).image_size
        if cfg.decode.device == "gpu":  # the job's device decoder, on the model's device
            from curation.stages.gpu_decode import GpuDecodeStage

            decoder = GpuDecodeStage(
                image_size=self.size, max_pixels=cfg.decode.max_pixels, device=str(self.clip.device)
            )
            self.decode = lambda datas: decoder.decode_all(datas, [True] * len(datas))
        else:
            from curation.stages.decode import decode_image

            max_pixels = cfg.decode.max_pixels
            self.decode = lambda datas: [decode_image(d, size=self.size, max_pixels=max_pixels) for d in datas]

    def embed(self, images: list[bytes], texts: list[str]):
        """Decode and embed one shard in batches of model.batch_size: (decoded, image and text embeddings)."""
        import numpy as np
        import torch

        from curation.models.clip import prepare_images
        from curation.stages.decode import DecodedImage

        clip, size, step = self.clip, self.size, self.cfg.model.batch_size
        decoded, img, txt = [], [], []
        with torch.inference_mode():
            for start in range(0, len(images), step):
                batch_decoded = self.decode(images[start : start + step])
                ok = [i for i, d in enumerate(batch_decoded) if isinstance(d, DecodedImage)]
                pixels = b"".join(batch_decoded[i].pixels for i in ok)
                array = np.frombuffer(pixels, np.uint8).reshape(-1, size, size, 3)
                batch = prepare_images(torch.from_numpy(array.copy()).to(clip.device), clip.mean, clip.std)
                tokens = clip.tokenizer(texts[start : start + step]).to(clip.device)
                with torch.autocast(clip.device.type, dtype=clip.amp_dtype, enabled=clip.amp_dtype is not None):
                    img.append(clip.model.encode_image(batch).float().cpu().numpy())
                    txt.append(clip.model.encode_text(tokens).float().cpu().numpy()[ok])
                decoded += batch_decoded
        return decoded, np.concatenate(img), np.concatenate(txt)

    def warm_up(self, images) -> None:
        step = self.cfg.model.batch_size
        self.embed(list(images[:step]), ["a photo"] * min(step, len(images)))

    def run(self, input_dir: Path, output_dir: Path | None, kept: set[str] | None = None) -> dict:
        """One pass over the input shards; seconds decoding+embedding and in all (with the write when
        `output_dir` is given: the rows of `kept` keys kept, the others rejected)."""
        import pyarrow.parquet as pq

        compute = 0.0
        rows = 0
        started = time.perf_counter()
        for path in sorted(input_dir.glob("*.parquet")):
            table = pq.read_table(path)
            images, texts = table.column("jpg").to_pylist(), table.column("caption").to_pylist()
            start = time.perf_counter()
            decoded, img, txt = self.embed(images, texts)
            compute += time.perf_counter() - start
            rows += len(images)
            if output_dir is not None:
                self.write(output_dir, path.stem, table, decoded, img, txt, kept)
        return {"rows": rows, "compute_s": compute, "total_s": time.perf_counter() - started}

    def write(self, output_dir: Path, shard: str, table, decoded, img, txt, kept_keys: set[str] | None) -> None:
        """kept/ and rejected/ of one shard, as the job writes them (curation/job.py: write_final_shard)."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        from curation.io import huggingface
        from curation.io.commit import Location, parquet_buffer
        from curation.schema import embedding_type
        from curation.stages.decode import DecodedImage

        ok = np.array([isinstance(d, DecodedImage) for d in decoded])
        n, dim = len(decoded), img.shape[1]
        img = img / np.linalg.norm(img, axis=1, keepdims=True)
        txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
        scores = np.full(n, np.nan, np.float32)
        scores[ok] = (img * txt).sum(axis=1)

        def vectors(matrix) -> pa.Array:
            full = np.zeros((n, dim), np.float16)
            full[ok] = matrix
            flat = pa.array(full.reshape(-1), pa.float16())
            return pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(~ok))

        keys = pc.binary_join_element_wise(pa.scalar(f"{shard}/"), table.column("key"), pa.scalar(""))
        kept = ok if kept_keys is None else np.array([k in kept_keys for k in keys.to_pylist()])
        images = table.column("jpg")
        out = pa.table(
            {
                "key": keys,
                "source": [shard] * n,
                "url": table.column("url"),
                "caption": table.column("caption"),
                "image": pc.if_else(pa.array(kept), images, pa.scalar(None, pa.binary())),
                "width": pa.array([d.width if isinstance(d, DecodedImage) else None for d in decoded], pa.int32()),
                "height": pa.array([d.height if isinstance(d, DecodedImage) else None for d in decoded], pa.int32()),
                "sha256": [hashlib.sha256(b).hexdigest() for b in images.to_pylist()],
                "img_emb": vectors(img).cast(embedding_type(dim)),
                "txt_emb": vectors(txt).cast(embedding_type(dim)),
                "clip_score": pa.array(scores, pa.float32()),
                "status": pa.array(np.where(kept, "kept", "rejected")),
            }
        )
        location = Location.of(str(output_dir))
        for status in ("kept", "rejected"):
            part = huggingface.with_features(out.filter(pc.equal(out.column("status"), status)))
            data = parquet_buffer(part, row_group_size=self.cfg.output.row_group_size)
            location.write_bytes(data, status, f"part-{shard}.parquet")


def run_pipeline_bench(
    n: int, shard_size: int, overrides: tuple[str, ...] = (), seed: int = 0, log=None, rounds: int = 3
) -> dict:
    from curation.config import load_config
    from curation.phases.score import start_ray
    from curation.runner import run_job

    cfg = load_config(None, overrides)
    images, kind = web_jpegs(n, seed)
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    bare_runs, job_runs = [], []
    try:
        write_parquet_shards(work / "input", images, shard_size)
        bare = BareLoop(cfg)
        bare.warm_up(images)
        start_ray(cfg)
        for round_ in range(rounds):
            output = work / f"output-{round_}"
            start = time.perf_counter()
            result = run_job(cfg, str(work / "input"), str(output), log=lambda line: None)
            seconds = time.perf_counter() - start
            timings = result.manifest["timings"]
            job_runs.append({"img_s": n / seconds, "seconds": seconds, "timings": timings, "result": result})
            kept = set(pq.read_table(output / "kept", columns=["key"]).column("key").to_pylist())
            shutil.rmtree(output, ignore_errors=True)
            shutil.rmtree(work / "bare", ignore_errors=True)
            figures = bare.run(work / "input", work / "bare", kept)
            bare_runs.append({"img_s": n / figures["compute_s"], "write_img_s": n / figures["total_s"], **figures})
            if log is not None:
                job_s, bare_s, both_s = job_runs[-1]["img_s"], bare_runs[-1]["img_s"], bare_runs[-1]["write_img_s"]
                log(
                    f"  round {round_ + 1}: job {job_s:.1f} img/s, bare {bare_s:.1f} img/s, bare+write {both_s:.1f} "
                    f"img/s (the job's write phase {timings.get('write_s', 0.0):.1f} s)"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bare_img_s = statistics.median(r["img_s"] for r in bare_runs)
    bare_write_img_s = statistics.median(r["write_img_s"] for r in bare_runs)
    job_img_s = statistics.median(r["img_s"] for r in job_runs)
    middle = sorted(job_runs, key=lambda r: r["img_s"])[len(job_runs) // 2]  # the median job's split
    timings, stages = middle["timings"], middle["timings"].get("stages", {})
    write_share = timings.get("write_s", 0.0) / middle["seconds"]
    ratio, ratio_write = job_img_s / bare_img_s, job_img_s / bare_write_img_s
    if log is not None:
        log(f"{n} JPEGs ({kind}), long side 640-1600 px, {-(-n // shard_size)} Parquet shards; model {cfg.model.arch}")
        log(f"  medians of {rounds} interleaved rounds (job, bare, job, bare, ...):")
        log(f"  bare decode+forward, one process         {bare_img_s:8.1f} img/s")
        log(f"  bare decode+forward+write, one process   {bare_write_img_s:8.1f} img/s")
        log(f"  Ray job end to end                       {job_img_s:8.1f} img/s ({middle['seconds']:.1f} s)")
        log(f"  ratio job / bare                         {ratio:8.3f}")
        log(f"  ratio job / bare+write                   {ratio_write:8.3f}")
        log(f"  write phase share of the job             {write_share:8.3f}")
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
        "rounds": rounds,
        "bare_img_s": bare_img_s,
        "bare_write_img_s": bare_write_img_s,
        "job_img_s": job_img_s,
        "job_seconds": middle["seconds"],
        "phases": {k: v for k, v in timings.items() if isinstance(v, (int, float))},
        "stages": stages,
        "kept": middle["result"].manifest["funnel"]["kept"],
        "ratio": ratio,
        "ratio_write": ratio_write,
        "write_share": write_share,
        "rounds_img_s": {
            "bare": [round(r["img_s"], 1) for r in bare_runs],
            "bare_write": [round(r["write_img_s"], 1) for r in bare_runs],
            "job": [round(r["img_s"], 1) for r in job_runs],
        },
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
    "--rounds",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Interleaved rounds of the bare loop and the job; the medians are reported.",
)
@click.option(
    "--set", "overrides", multiple=True, metavar="a.b=VALUE", help="Config override for the job (repeatable)."
)
@click.option("--seed", default=0, show_default=True, type=int)
def pipeline_command(n: int, shard_size: int, rounds: int, overrides: tuple[str, ...], seed: int) -> None:
    """End-to-end img/s of the Ray job vs bare decode+forward(+write) loops on the same synthetic JPEGs."""
    click.echo(json_line(run_pipeline_bench(n, shard_size, overrides, seed, log=click.echo, rounds=rounds)))
