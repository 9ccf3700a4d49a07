"""`curate fit-domain`: the built-in model's domain (curation/domain.py), from the world it was trained on.

Renders images of the synthetic world with the training set's mix of defect kinds (a seed the training
never used), embeds them with the shipped model as the pipeline does, fits k-means centroids of the
embeddings and takes a high quantile of each image's distance to its nearest centroid, times a margin.
The vocabulary is every word of the captions of worlds the generator writes (all its defect kinds,
personal-data snippets, the caption stage's placeholders and the languages it plants): the demo's, the
tests' and proxy-eval's synthetic rows all fall inside it.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from curation.domain import DOMAIN_FILE, Domain

FIT_SEED = 2_000_003  # neither the CLIP's nor the heads' training images, nor the retrieval pairs


def fit_domain(
    folder: Path,
    *,
    images: int = 2000,
    clusters: int = 16,
    quantile: float = 1.0,
    margin: float = 1.25,
    worlds: int = 4,
    min_coverage: float = 0.75,
) -> Domain:
    import torch

    from curation.dedup.semantic import fit_centroids
    from curation.lab.train_clip import TRAIN_MIX, embed_set, render_set
    from curation.models.towers import load_model_dir

    torch.set_num_threads(2)
    model, tokenizer = load_model_dir(folder)
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    data = render_set(images, seed=FIT_SEED, stream="domain", mix=TRAIN_MIX, size=size, workers=1)
    with torch.inference_mode():
        emb, _, _ = embed_set(model, tokenizer, data.pixels, None, tokens=False)
    centroids = fit_centroids(emb.astype(np.float32), k=clusters, seed=0)
    centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    fitted = Domain(
        centroids=centroids.astype(np.float32), max_distance=0.0, vocabulary=frozenset(), min_coverage=0.0, about={}
    )
    reach = float(np.quantile(fitted.distances(emb), quantile))
    about = {
        "images": images,
        "clusters": clusters,
        "quantile": quantile,
        "distance_at_quantile": round(reach, 6),
        "margin": margin,
        "world": "the synthetic world, the CLIP training set's mix of defect kinds (curation/lab/train_clip.py)",
    }
    vocabulary = world_vocabulary(worlds)
    about["caption_worlds"] = f"{worlds} worlds of 2000 rows (seeds {FIT_SEED}...)"
    return Domain(
        centroids=fitted.centroids,
        max_distance=round(reach * margin, 6),
        vocabulary=vocabulary,
        min_coverage=min_coverage,
        about=about,
    )


def world_vocabulary(worlds: int, rows: int = 2000) -> frozenset[str]:
    """The words of every caption of `worlds` generated worlds, after the caption stage's hygiene (defect
    cues, personal-data snippets and their placeholders), and of captions of every scene the world can
    draw, in English and in every language it plants (templates drawn at random, 4 per scene)."""
    import itertools
    import tempfile

    from curation.domain import caption_words
    from curation.io.readers import read_shard
    from curation.io.sources import list_shards
    from curation.lab.synth import generate
    from curation.lab.synth.languages import LANGUAGES, translated_caption
    from curation.lab.synth.world import COLOURS, COUNTS, SHAPES, TEXTURES, Scene
    from curation.stages.caption import CaptionStage

    words: set[str] = set()
    rng = np.random.default_rng(FIT_SEED)
    for shape, colour, background, texture, count in itertools.product(SHAPES, COLOURS, COLOURS, TEXTURES, COUNTS):
        if colour == background:
            continue
        scene = Scene(shape=shape, colour=colour, count=count, texture=texture, background=background, layout_seed=0)
        for _ in range(4):
            words.update(caption_words(scene.caption(rng)))
            for language in LANGUAGES:
                words.update(caption_words(translated_caption(scene, language, rng)))
    stage = CaptionStage()
    for world in range(worlds):
        with tempfile.TemporaryDirectory() as folder:
            generate(folder, rows=rows, seed=FIT_SEED + world, fmt="parquet")
            for shard in list_shards(folder, "auto"):
                table = stage.process_batch(read_shard(shard, {}))
                for caption in table.column("caption").to_pylist():
                    words.update(caption_words(caption))
    return frozenset(words)


def write_domain(folder: Path, **settings) -> Path:
    domain = fit_domain(folder, **settings)
    path = folder / DOMAIN_FILE
    path.write_text(domain.to_json() + "\n")
    path.chmod(0o644)
    return path


@click.command("fit-domain")
@click.option(
    "--model-dir", default=None, type=click.Path(file_okay=False), help="A model folder (default: the built-in one)."
)
def fit_domain_command(model_dir: str | None) -> None:
    """Write the built-in model's domain.json (its training world's captions and image embeddings)."""
    from curation.models.info import builtin_dir

    click.echo(f"wrote {write_domain(Path(model_dir) if model_dir else builtin_dir('curation-tiny'))}")
