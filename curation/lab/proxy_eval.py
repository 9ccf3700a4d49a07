"""`curate proxy-eval`: DataComp in miniature. Does curation make the corpus better to train on?

1. Generate one raw pool of the synthetic world with a realistic share of planted defects (about 38 %:
   misaligned captions, exact/near/semantic duplicates, broken and tiny images, unsafe, watermarked and
   low-aesthetic images) and run the real curation job on it.
2. Train the tiny CLIP from scratch three times, with the same architecture, seed, steps, batch size and
   schedule, on (a) the raw pool (every pair a training loader can decode), (b) a random subset of the
   raw pool the size of the curated one, (c) the curated subset (the job's kept rows).
3. Evaluate each on a held-out clean test set rendered from another seed with no defects: zero-shot
   classification of shape and colour (class prompts averaged over the other attributes) and image->text
   retrieval R@1 among 100 captions (the headline metric).

The pool's decoded pixels are the pipeline's own (decode_image at the model's input size), so the three
arms differ only in which pairs they train on.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from curation.errors import UserError

ARMS = ("raw", "random", "curated")
# Planted share of each defect kind in the raw pool (38 % in all): web pools are this noisy and worse.
POOL_DEFECTS = {
    "misaligned": 0.18,
    "exact_duplicate": 0.04,
    "near_duplicate": 0.04,
    "semantic_duplicate": 0.04,
    "truncated_jpeg": 0.01,
    "not_an_image": 0.01,
    "tiny": 0.01,
    "extreme_aspect": 0.01,
    "unsafe": 0.01,
    "watermark": 0.02,
    "low_aesthetic": 0.01,
    "non_english": 0.01,
    "pii_caption": 0.0,  # redacted, not removed: no effect on what is trained on
}
PROMPT_TEMPLATE = "a photo of a {colour} {shape} on a {background} background"


@dataclass(frozen=True, kw_only=True)
class ProxySettings:
    pool_rows: int = 3000
    test_rows: int = 1000  # held-out clean pairs; retrieval uses groups of 100
    steps: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    test_seed: int = 2_000_003  # neither the pool (seed) nor the shipped model's data comes from it
    arch: str = "curation-tiny"
    config_path: str | None = None  # the curation job's config; None: pipelines/demo.yaml (or the defaults)
    threads: int = 2
    workers: int = 2


@dataclass
class Pairs:
    keys: list[str]
    captions: list[str]
    pixels: np.ndarray  # (N, S, S, 3) uint8, as the decode stage gives them


def proxy_eval(
    out_dir: str | Path, settings: ProxySettings = ProxySettings(), log: Callable[[str], None] = print
) -> dict:
    """Run the whole comparison in `out_dir` (pool/, curated/); returns the result (also `result.json`)."""
    import torch

    from curation.config import load_config
    from curation.lab.synth import generate
    from curation.lab.train_clip import TrainSettings, render_set, train_on_pairs
    from curation.models.clip import model_image_size
    from curation.runner import run_job

    if settings.test_rows < 100:
        raise UserError(f"--test-rows {settings.test_rows}: retrieval ranks 100 captions at a time, use at least 100")
    started = time.time()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out} is a file: give a directory")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(settings.threads)
    size = model_image_size(settings.arch)
    timings: dict[str, float] = {}

    t = time.time()
    pool_dir, curated_dir = out / "pool", out / "curated"
    log(
        f"generating a raw pool of {settings.pool_rows} pairs ({round(100 * sum(POOL_DEFECTS.values()))} % planted defects) ..."
    )
    truth = generate(str(pool_dir), rows=settings.pool_rows, seed=settings.seed, planters=pool_planters())
    shutil.rmtree(curated_dir, ignore_errors=True)  # a fresh job every time: the comparison is the point
    cfg = load_config(settings.config_path or _default_config())
    log("curating it with the curation job ...")
    manifest = run_job(cfg, str(pool_dir), str(curated_dir), log=lambda _: None).manifest
    timings["pool_and_curation_s"] = round(time.time() - t, 1)

    t = time.time()
    raw = decodable_pairs(pool_dir, size)
    curated = subset(raw, kept_keys(curated_dir))
    random_subset = subset(raw, random_keys(raw.keys, curated.pixels.shape[0], settings.seed))
    test = render_set(
        settings.test_rows,
        seed=settings.test_seed,
        stream="proxy-test",
        mix=(1.0, 0, 0, 0),
        size=size,
        workers=settings.workers,
    )
    timings["decode_s"] = round(time.time() - t, 1)

    train = TrainSettings(
        arch=settings.arch,
        seed=settings.seed,
        steps=settings.steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        warmup=max(1, settings.steps // 10),
        threads=settings.threads,
    )
    arms = {}
    for name, pairs in (("raw", raw), ("random", random_subset), ("curated", curated)):
        t = time.time()
        log(f"training arm {name} on {len(pairs.keys)} pairs ({settings.steps} steps of {settings.batch_size}) ...")
        model, info = train_on_pairs(pairs.pixels, pairs.captions, train, log=lambda _: None)
        arms[name] = {
            "pairs": len(pairs.keys),
            "defect_share": defect_share(pairs.keys, truth),
            **held_out_metrics(model, settings.arch, test),
            "final_loss": info["final_loss"],
            "train_s": round(time.time() - t, 1),
        }
    result = {
        "pool_rows": settings.pool_rows,
        "planted_defect_share": round(sum(v != "clean" for v in truth["labels"].values()) / settings.pool_rows, 4),
        "curated_kept": manifest["funnel"]["kept"],
        "test_rows": settings.test_rows,
        "steps": settings.steps,
        "batch_size": settings.batch_size,
        "seed": settings.seed,
        "arms": arms,
        "curated_beats_raw": arms["curated"]["retrieval_r1_100"] > arms["raw"]["retrieval_r1_100"],
        "curated_beats_random": arms["curated"]["retrieval_r1_100"] > arms["random"]["retrieval_r1_100"],
        "timings": {**timings, "total_s": round(time.time() - started, 1)},
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def pool_planters() -> tuple:
    """The default planters with the proxy pool's defect shares."""
    from curation.lab.synth.defects import DEFAULT_PLANTERS

    return tuple(dataclasses.replace(p, fraction=POOL_DEFECTS.get(p.kind, p.fraction)) for p in DEFAULT_PLANTERS)


def _default_config() -> str | None:
    from curation.lab.demo import DEMO_CONFIG

    return str(DEMO_CONFIG) if DEMO_CONFIG.exists() else None


# ---- the three training sets --------------------------------------------------------------------------


def decodable_pairs(pool_dir: Path, size: int) -> Pairs:
    """Every pair of the pool a training loader can use: read, with a caption, and an image that decodes
    (the loader skips the rest, as img2dataset-fed loaders do). Pixels come from the pipeline's decoder."""
    from curation.io.readers import read_shard
    from curation.io.sources import list_shards
    from curation.schema import Status
    from curation.stages.decode import DecodedImage, decode_image

    keys, captions, pixels = [], [], []
    for shard in list_shards(str(pool_dir)):
        table = read_shard(shard)
        table = table.filter(
            pc.and_(pc.equal(table.column("status"), Status.KEPT.value), pc.is_valid(table.column("caption")))
        )
        for key, caption, image in zip(*(table.column(c).to_pylist() for c in ("key", "caption", "image"))):
            decoded = decode_image(image, size=size, max_pixels=1 << 28)
            if isinstance(decoded, DecodedImage):
                keys.append(key)
                captions.append(caption)
                pixels.append(decoded.pixels)
    array = np.frombuffer(b"".join(pixels), np.uint8).reshape(-1, size, size, 3)
    return Pairs(keys=keys, captions=captions, pixels=array)


def kept_keys(curated_dir: Path) -> set[str]:
    import pyarrow.dataset as ds

    kept = ds.dataset(str(curated_dir / "kept"), format="parquet").to_table(columns=["key"])
    return set(kept.column("key").to_pylist())


def random_keys(keys: list[str], count: int, seed: int) -> set[str]:
    """`count` keys drawn uniformly without replacement (seeded): the random arm, the curated arm's size."""
    rng = np.random.default_rng([seed, 29])
    return {keys[i] for i in rng.choice(len(keys), size=count, replace=False)}


def subset(pairs: Pairs, keys: set[str]) -> Pairs:
    index = [i for i, key in enumerate(pairs.keys) if key in keys]
    return Pairs(
        keys=[pairs.keys[i] for i in index], captions=[pairs.captions[i] for i in index], pixels=pairs.pixels[index]
    )


def defect_share(keys: list[str], truth: dict) -> float:
    """Share of the pairs carrying a planted defect (duplicate copies included)."""
    labels = truth["labels"]
    return round(sum(labels[k] != "clean" for k in keys) / max(1, len(keys)), 4)


# ---- held-out metrics ---------------------------------------------------------------------------------


def held_out_metrics(model, arch: str, test) -> dict:
    """Zero-shot shape and colour accuracy and image->text R@1 among 100 captions on the clean test set."""
    import open_clip

    from curation.lab.train_clip import embed_set, retrieval_metrics

    tokenizer = open_clip.get_tokenizer(arch)
    image, _, _ = embed_set(model, tokenizer, test.pixels, None, tokens=False)
    shape = zero_shot_accuracy(model, tokenizer, image, [s.shape for s in test.scenes], "shape")
    colour = zero_shot_accuracy(model, tokenizer, image, [s.colour for s in test.scenes], "colour")
    retrieval = retrieval_metrics(model, tokenizer, test)
    return {
        "zero_shot_shape": round(shape, 4),
        "zero_shot_colour": round(colour, 4),
        "zero_shot_mean": round((shape + colour) / 2, 4),
        "retrieval_r1_100": retrieval["retrieval_r1_100"],
    }


def zero_shot_accuracy(model, tokenizer, image: np.ndarray, labels: list[str], attribute: str) -> float:
    """Top-1 accuracy of class prompts ("a photo of a red circle on a blue background"); each class
    embedding is the mean over every value of the other attributes (prompt ensembling), so a class is
    told apart by its own word and not by what the prompt happens to say about the rest of the scene."""
    import itertools

    import torch

    from curation.lab.synth.world import COLOURS, SHAPES

    values = {"shape": list(SHAPES), "colour": list(COLOURS)}
    classes = values[attribute]
    class_emb = []
    with torch.inference_mode():
        for name in classes:
            choices = {**values, attribute: [name]}
            prompts = [
                PROMPT_TEMPLATE.format(shape=shape, colour=colour, background=background)
                for shape, colour, background in itertools.product(choices["shape"], choices["colour"], COLOURS)
                if background != colour
            ]
            text = torch.nn.functional.normalize(model.encode_text(tokenizer(prompts)).float(), dim=-1).mean(0)
            class_emb.append(torch.nn.functional.normalize(text, dim=-1).numpy())
    predicted = (image @ np.stack(class_emb).T).argmax(axis=1)
    truth = np.array([classes.index(label) for label in labels])
    return float((predicted == truth).mean())


# ---- report -------------------------------------------------------------------------------------------


def format_table(result: dict) -> str:
    header = f"{'arm':<8} {'pairs':>6} {'defects':>8} {'zs shape':>9} {'zs colour':>10} {'zs mean':>8} {'R@1/100':>8} {'train s':>8}"
    lines = [
        f"raw pool {result['pool_rows']} pairs ({100 * result['planted_defect_share']:.0f} % planted defects), "
        f"{result['steps']} steps of {result['batch_size']}, seed {result['seed']}, held-out clean test "
        f"{result['test_rows']} pairs",
        header,
        "-" * len(header),
    ]
    for name in ARMS:
        a = result["arms"][name]
        lines.append(
            f"{name:<8} {a['pairs']:>6} {100 * a['defect_share']:>7.1f}% {a['zero_shot_shape']:>9.3f} "
            f"{a['zero_shot_colour']:>10.3f} {a['zero_shot_mean']:>8.3f} {a['retrieval_r1_100']:>8.3f} {a['train_s']:>8.0f}"
        )
    lines.append(
        f"curated beats raw: {'yes' if result['curated_beats_raw'] else 'no'}  curated beats random: "
        f"{'yes' if result['curated_beats_random'] else 'no'}  (R@1)  total {result['timings']['total_s']:.0f} s"
    )
    return "\n".join(lines)


def result_json_line(result: dict) -> str:
    return json.dumps(result, sort_keys=False)
