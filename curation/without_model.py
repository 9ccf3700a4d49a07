"""`model: none` in a config (pipelines/basic.yaml): what a job without a CLIP defaults to, and what it
refuses. Without a model there are no embeddings, clip_score or head scores, so the settings that read
them default to off, and asking for one of them is one line naming it (docs/models.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from curation.config import Config

NO_MODEL = "none"  # model.arch (or `model: none`): no CLIP, no embedding, no heads
DEDUP_WITHOUT_MODEL = {"semantic": False, "near_min_cosine": -1.0, "quality": "width"}


def defaults_without_model(data):
    """The raw config mapping with `model: none` spelt out (model.arch: none) and, unless the file sets
    them, no heads and dedup by hashes alone (DEDUP_WITHOUT_MODEL). Other mappings pass unchanged."""
    if not isinstance(data, dict):
        return data
    model = data.get("model")
    if (model is None and "model" in data) or model == NO_MODEL:
        data = {**data, "model": {"arch": NO_MODEL}}
    elif not (isinstance(model, dict) and model.get("arch") == NO_MODEL):
        return data
    dedup = data.get("dedup")
    if isinstance(dedup, dict):
        dedup = {**DEDUP_WITHOUT_MODEL, **dedup}
    elif dedup is None:
        dedup = DEDUP_WITHOUT_MODEL
    return {**data, "heads": data.get("heads", ()), "dedup": dedup}


def refuse_what_needs_a_model(cfg: Config) -> None:
    """Raise one line naming every setting of `cfg` (a config with model: none) that needs an embedding."""
    d = cfg.dedup
    needs = {
        "heads": bool(cfg.heads),
        "clip.min_score": cfg.clip.min_score is not None,
        "clip.keep_fraction": cfg.clip.keep_fraction is not None,
        "dedup.semantic": d.semantic,
        "dedup.near_min_cosine": d.near_min_cosine > -1.0,
        "dedup.against": bool(d.against),
        "dedup.eval_sets": bool(d.eval_sets),
        "image_filter.reference": bool(cfg.image_filter.reference),
        f"dedup.quality {d.quality}": d.quality != "width",
        "decode.device gpu": cfg.decode.device == "gpu",
        "output.embeddings": cfg.output.embeddings is not None,
    }
    asked = [name for name, on in needs.items() if on]
    if asked:
        raise ValueError(
            f"model: none gives no embeddings or scores, which {', '.join(asked)} need: drop them "
            "(dedup.quality: width, dedup.near_min_cosine: -1), or give a model"
        )
