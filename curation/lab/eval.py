"""`curate eval`: precision and recall per planted defect kind, from a job's output and the world's truth.

A defect kind's prediction is the set of rows rejected with its reason (KIND_REASONS). Duplicate kinds
are judged per group: of a group's members (the original and its copies) all but one should be
rejected as duplicates — whichever survives — so a group is right when exactly one member is kept.
`clean_rejected` is the fraction of clean rows rejected for any reason (a duplicate group's original
rejected as that group's duplicate is not counted: another member of its group survives in its place).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from curation.errors import UserError

KIND_REASONS: dict[str, tuple[str, ...]] = {
    "misaligned": ("low_clip_score",),
    "unsafe": ("unsafe",),
    "watermark": ("watermark",),
    "low_aesthetic": ("low_aesthetic",),
    "exact_duplicate": ("exact_duplicate",),
    "near_duplicate": ("near_duplicate",),
    "semantic_duplicate": ("semantic_duplicate",),
    "truncated_jpeg": ("truncated_image",),
    "not_an_image": ("not_an_image",),
    "tiny": ("image_too_small",),
    "extreme_aspect": ("extreme_aspect_ratio",),
    "non_english": ("unwanted_language",),
}
GROUP_KINDS = {
    "exact_duplicate": "exact",
    "near_duplicate": "near",
    "semantic_duplicate": "semantic",
}  # kind -> duplicate_groups kind
CLEAN = "clean"
PII_KIND = "pii_caption"  # planted personal data: scored by what the caption stage found (the `pii` column)


def read_output(output: str) -> dict[str, tuple[str, str | None]]:
    """key -> (status, reject_reason) for every row of `<output>/kept` and `<output>/rejected`."""
    rows: dict[str, tuple[str, str | None]] = {}
    for table in _output_tables(output, ["key", "status", "reject_reason"]):
        for key, status, reason in zip(*(table.column(c).to_pylist() for c in ("key", "status", "reject_reason"))):
            rows[key] = (status, reason)
    return rows


def redacted_keys(output: str) -> set[str] | None:
    """Keys of the rows whose caption had personal data (the `pii` column lists kinds), or None when the
    output has no `pii` column (a run from before the caption stage, or with caption.pii: off)."""
    keys: set[str] = set()
    examined = False
    for table in _output_tables(output, ["key", "pii"], optional=("pii",)):
        if "pii" in table.column_names and table.column("pii").null_count < table.num_rows:
            examined = True
            keys.update(
                k for k, kinds in zip(table.column("key").to_pylist(), table.column("pii").to_pylist()) if kinds
            )
    return keys if examined else None


def _output_tables(output: str, columns: list[str], optional: tuple[str, ...] = ()):
    """`columns` of each Parquet file of `<output>/kept` and `<output>/rejected` (those in `optional`
    only where present). Files are read one by one through fsspec file objects: an Arrow dataset over a
    Python (fsspec) filesystem leaves Arrow threads calling into Python at exit, which can abort it."""
    import fsspec
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(output)
    for part in ("kept", "rejected"):
        path = f"{root.rstrip('/')}/{part}"
        if not fs.exists(path):
            raise UserError(f"{output} has no {part}/ folder: point curate eval at the --output of a finished run")
        for name in sorted(p for p in fs.find(path) if p.endswith(".parquet")):
            with fs.open(name, "rb") as f:
                parquet = pq.ParquetFile(f)
                present = parquet.schema_arrow.names
                yield parquet.read(columns=[c for c in columns if c not in optional or c in present], use_threads=False)


def load_truth(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"truth file {path} not found: pass the truth.json that `curate synth` wrote")
    try:
        truth = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"truth file {path} is not JSON: pass the truth.json that `curate synth` wrote") from None
    if not isinstance(truth, dict) or not isinstance(truth.get("labels"), dict):
        raise UserError(f"truth file {path} has no labels: pass the truth.json that `curate synth` wrote")
    return truth


def output_heads(output: str) -> list[dict]:
    """The run's heads ({"column", "reason"}) from its manifest; none for a run from before heads were listed."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(output)
    path = f"{root.rstrip('/')}/_manifest.json"
    if not fs.exists(path):
        return []
    with fs.open(path, "rb") as f:
        return list(json.loads(f.read()).get("heads") or [])


def evaluate(
    rows: dict[str, tuple[str, str | None]], truth: dict, redacted: set[str] | None = None, heads: list[dict] = ()
) -> dict:
    """{kind: {"precision", "recall", "n"}, ..., "clean_rejected": fraction} (see the module docstring).
    With `redacted` (rows whose caption had personal data: redacted, or rejected as caption_pii), planted
    personal data (`pii_caption`) is scored too: it is found, not rejected. Heads whose reason no planted
    kind stands for (a head of the user's: the world plants nothing for it) are listed under "heads" with
    the rows they rejected and how many of those were clean."""
    labels: dict[str, str] = truth["labels"]
    groups = truth.get("duplicate_groups", [])
    rejected_for = {k: reason for k, (status, reason) in rows.items() if status == "rejected"}
    result: dict = {}
    for kind, reasons in KIND_REASONS.items():
        predicted = {k for k, reason in rejected_for.items() if reason in reasons}
        if kind in GROUP_KINDS:
            kind_groups = [g for g in groups if g["kind"] == GROUP_KINDS[kind]]
            n = sum(len(g["copies"]) for g in kind_groups)
            hits = sum(
                min(len(g["copies"]), sum(m in predicted for m in (g["original"], *g["copies"]))) for g in kind_groups
            )
        else:
            truth_keys = {k for k, label in labels.items() if label == kind}
            n = len(truth_keys)
            hits = len(truth_keys & predicted)
        if n == 0 and not predicted:
            continue
        result[kind] = {
            "precision": round(hits / len(predicted), 4) if predicted else (1.0 if n == 0 else 0.0),
            "recall": round(hits / n, 4) if n else 1.0,
            "n": n,
        }
    if redacted is not None:
        truth_keys = {k for k, label in labels.items() if label == PII_KIND}
        predicted = redacted | {k for k, reason in rejected_for.items() if reason == "caption_pii"}
        if truth_keys or predicted:
            hits = len(truth_keys & predicted)
            result[PII_KIND] = {
                "precision": round(hits / len(predicted), 4) if predicted else 0.0,
                "recall": round(hits / len(truth_keys), 4) if truth_keys else 1.0,
                "n": len(truth_keys),
            }
    originals = {
        g["original"]: KIND_REASONS[kind][0] for kind, gk in GROUP_KINDS.items() for g in groups if g["kind"] == gk
    }
    clean = [k for k, label in labels.items() if label == CLEAN]
    wrongly = [k for k in clean if k in rejected_for and rejected_for[k] != originals.get(k)]
    result["clean_rejected"] = round(len(wrongly) / len(clean), 4) if clean else 0.0
    planted = {reason for reasons in KIND_REASONS.values() for reason in reasons}
    unplanted = [h["reason"] for h in heads if h["reason"] not in planted]
    if unplanted:
        result["heads"] = {
            reason: {
                "rejected": sum(r == reason for r in rejected_for.values()),
                "clean": sum(rejected_for.get(k) == reason for k in clean),
            }
            for reason in unplanted
        }
    return result


def clean_rejections(rows: dict[str, tuple[str, str | None]], truth: dict) -> Counter:
    """Why clean rows were rejected: reason -> count (for the table)."""
    originals = {g["original"] for g in truth.get("duplicate_groups", [])}
    counts: Counter = Counter()
    for key, label in truth["labels"].items():
        status, reason = rows.get(key, (None, None))
        if label == CLEAN and status == "rejected" and not (key in originals and reason in GROUP_KINDS):
            counts[reason] += 1
    return counts


def missing_keys(rows: dict, truth: dict) -> int:
    return sum(1 for key in truth["labels"] if key not in rows)


def format_table(result: dict, clean_reasons: Counter, missing: int, retrieval: dict | None = None) -> str:
    lines = [f"{'kind':<18} {'precision':>9} {'recall':>7} {'n':>6}  rejected as"]
    for kind, m in result.items():
        if kind in ("clean_rejected", "retrieval_r1_100", "heads"):
            continue
        how = "pii column (redacted)" if kind == PII_KIND else ", ".join(KIND_REASONS[kind])
        lines.append(f"{kind:<18} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['n']:>6}  {how}")
    for reason, m in result.get("heads", {}).items():
        lines.append(f"head {reason:<13} {'-':>9} {'-':>7} {'-':>6}  rejected {m['rejected']} ({m['clean']} clean)")
    why = ", ".join(f"{r} {c}" for r, c in clean_reasons.most_common()) or "none"
    lines.append(f"clean rows rejected: {100 * result['clean_rejected']:.1f} % ({why})")
    if missing:
        lines.append(f"warning: {missing} rows of the truth are in neither kept/ nor rejected/")
    if retrieval:
        lines.append(
            f"retrieval (image->text, 100 candidates, {retrieval['retrieval_pairs']} held-out pairs): "
            f"R@1 {retrieval['retrieval_r1_100']:.3f}"
        )
    return "\n".join(lines)


def shipped_model_retrieval(pairs: int = 1000) -> dict:
    """R@1 of the shipped tiny CLIP on held-out synthetic pairs (the seed its training never used)."""
    import torch

    from curation.lab.train_clip import TrainSettings, render_set, retrieval_metrics
    from curation.models.clip import BUILTIN, builtin_dir
    from curation.models.towers import load_model_dir

    settings = TrainSettings()
    folder = builtin_dir(settings.arch)
    if not (folder / "open_clip_config.json").is_file():
        raise UserError(f"no {BUILTIN} model is shipped in {folder}: run `curate train-clip --output {folder}`")
    torch.set_num_threads(2)
    model, tokenizer = load_model_dir(folder)
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    held_out = render_set(pairs, seed=settings.eval_seed, stream="retrieval", mix=(1.0, 0, 0, 0), size=size, workers=1)
    return retrieval_metrics(model, tokenizer, held_out)
