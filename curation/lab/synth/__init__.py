"""A seeded synthetic image-text world with planted defects, written as img2dataset output.

`generate(out, rows=300, seed=0)` renders scenes of shapes, plants defects (duplicates, misaligned
captions, broken bytes, tiny and extreme-aspect images), writes the shards and returns the truth, which
is also written as `<out>/truth.json`. Truth keys are the pipeline's record keys: `<shard id>/<key>`.
The same arguments always give byte-identical files.

No two scenes of a world share all five attributes (shape, colour, count, texture, background) until
every one of the DESCRIPTIONS combinations is used: two renderings of one description are semantic
duplicates by SemDeDup's definition, and the truth would call them clean. The only duplicates in a world
of up to DESCRIPTIONS rows are the planted ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from curation.errors import UserError
from curation.lab.synth.defects import CLEAN, DEFAULT_PLANTERS, DEFECT_KINDS, Draft, Planter, Row, plant, planter_rng
from curation.lab.synth.img2dataset import MAX_SHARD_SIZE, WRITERS, Sample, is_own_file, sample_key, shard_name
from curation.lab.synth.world import DESCRIPTIONS, Scene, sample_scene, sample_size

__all__ = ["CLEAN", "DEFECT_KINDS", "FORMATS", "Scene", "SynthArgumentError", "generate"]

FORMATS = tuple(WRITERS)
TRUTH_FILE = "truth.json"


class SynthArgumentError(UserError, ValueError):
    """A bad argument to `generate`; the message names the fix."""


def generate(
    output_dir: str,
    rows: int = 2000,
    seed: int = 0,
    fmt: str = "webdataset",
    shard_size: int = 500,
    *,
    planters: tuple[Planter, ...] = DEFAULT_PLANTERS,
) -> dict:
    """Write a synthetic world of `rows` samples to `output_dir` and return its truth.

    `planters` chooses the defect kinds and their fractions (default: `DEFAULT_PLANTERS`). Raises
    `SynthArgumentError` (a `ValueError` and a `UserError`) for bad arguments or a directory holding
    files the generator did not write; files it wrote before are replaced.
    """
    _check_arguments(rows=rows, seed=seed, fmt=fmt, shard_size=shard_size)
    out = Path(output_dir)
    _prepare_output_dir(out)
    draft = _draft_world(rows, seed)
    plant(draft, planters, seed)

    shard_count = -(-rows // shard_size)
    for shard in range(shard_count):
        shard_rows = draft.rows[shard * shard_size : (shard + 1) * shard_size]
        samples = [_sample(row, draft, shard_size) for row in shard_rows]
        WRITERS[fmt](out, shard_name(shard), samples)
        for row in shard_rows:  # written: let the bytes go, so large worlds fit in memory
            row.payload = None

    truth = _truth(
        draft, seed=seed, fmt=fmt, shard_size=shard_size, shard_count=shard_count, kinds=[p.kind for p in planters]
    )
    (out / TRUTH_FILE).write_text(json.dumps(truth, indent=1) + "\n")
    return truth


def record_key(index: int, shard_size: int) -> str:
    """The pipeline's key of the row at `index`: `<shard id>/<img2dataset key>`."""
    shard, position = divmod(index, shard_size)
    return f"{shard_name(shard)}/{sample_key(shard, position)}"


def _draft_world(rows: int, seed: int) -> Draft:
    rng = planter_rng(seed, "scenes")
    draft_rows = []
    used: set[tuple] = set()
    for index in range(rows):
        scene = sample_scene(rng)
        while _description(scene) in used:
            scene = sample_scene(rng)
        used.add(_description(scene))
        if len(used) == DESCRIPTIONS:  # every description taken: the next cycle of them starts
            used.clear()
        draft_rows.append(Row(index=index, scene=scene, caption=scene.caption(rng), size=sample_size(rng)))
    return Draft(rows=draft_rows)


def _description(scene: Scene) -> tuple:
    return (scene.shape, scene.colour, scene.count, scene.texture, scene.background)


def _sample(row: Row, draft: Draft, shard_size: int) -> Sample:
    payload = draft.payload(row)
    shard, position = divmod(row.index, shard_size)
    return Sample(key=sample_key(shard, position), caption=row.caption, payload=payload, size=row.image_size)


def _truth(draft: Draft, *, seed: int, fmt: str, shard_size: int, shard_count: int, kinds: list[str]) -> dict:
    def key(index: int) -> str:
        return record_key(index, shard_size)

    return {
        "seed": seed,
        "rows": len(draft.rows),
        "defect_kinds": kinds,  # the planters that made it, in order
        "format": fmt,
        "shard_size": shard_size,
        "shards": [shard_name(s) for s in range(shard_count)],
        "labels": {key(r.index): r.label for r in draft.rows},
        "scenes": {key(r.index): r.scene.attributes() for r in draft.rows},
        "duplicate_groups": [
            {
                "kind": g.kind,
                "variant": g.variant,
                "original": key(g.original),
                "copies": [key(c) for c in g.copies],
            }
            for g in draft.duplicate_groups
        ],
        "misaligned_pairs": [[key(a), key(b)] for a, b in draft.misaligned_pairs],
    }


def _check_arguments(*, rows: int, seed: int, fmt: str, shard_size: int) -> None:
    def is_int(value) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    if fmt not in FORMATS:
        raise SynthArgumentError(f"unknown fmt {fmt!r}: use one of {', '.join(map(repr, FORMATS))}")
    if not is_int(rows) or rows < 1:
        raise SynthArgumentError(f"rows must be a whole number of at least 1, got {rows!r}: pass rows >= 1")
    if not is_int(seed) or seed < 0:
        raise SynthArgumentError(f"seed must be a whole number >= 0, got {seed!r}: pass e.g. seed=0")
    if not is_int(shard_size) or not 1 <= shard_size <= MAX_SHARD_SIZE:
        raise SynthArgumentError(
            f"shard_size must be between 1 and {MAX_SHARD_SIZE} (img2dataset keys hold 4 index digits), "
            f"got {shard_size!r}: pass e.g. shard_size=500"
        )


def _prepare_output_dir(out: Path) -> None:
    """Create `out`, or empty it of files a previous generation wrote; refuse anything else in it."""
    if out.exists() and not out.is_dir():
        raise SynthArgumentError(f"output_dir {out} is a file: pass a directory path")
    out.mkdir(parents=True, exist_ok=True)
    entries = sorted(out.iterdir())
    foreign = [p.name for p in entries if not (p.is_file() and (is_own_file(p.name) or p.name == TRUTH_FILE))]
    if foreign:
        raise SynthArgumentError(
            f"output_dir {out} holds files the generator did not write ({', '.join(foreign[:3])}): "
            "pass an empty or new directory"
        )
    for path in entries:
        path.unlink()
