"""What the report shows, read from a finished output (a directory or URL): bounded work on any size.

The manifest gives the exact funnel. Everything else comes from a sample: whole shards (their kept/
and rejected/ parts together, so kept-vs-rejected proportions stay honest) are read in a seeded random
order, small columns only, until `max_rows` rows are in hand; then rejected/ parts alone are scanned
(reason and caption columns only) until every reject reason has a full grid. Image bytes are read
last, only for the row groups that hold a thumbnail.
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.errors import UserError
from curation.io.commit import Location
from curation.io.readers import image_values
from curation.manifest import MANIFEST_FILE, read_shards
from curation.schema import Stage

# Float columns that are sizes or positions, not scores a threshold applies to.
NOT_SCORES = {"width", "height"}
SMALL_COLUMNS = ["key", "caption", "status", "reject_reason", "reject_stage"]
EMBEDDINGS = ["img_emb", "txt_emb"]
LABELS = ["lang", "pii", "faces"]  # what the caption, language and privacy stages recorded


@dataclass
class Threshold:
    """One cut on a score column: rows `reject` ("above"/"below") `value` are rejected."""

    column: str
    value: float
    reject: str
    label: str


@dataclass
class ReportData:
    output_url: str
    manifest: dict
    sample: pa.Table  # small columns (+ embeddings) of the sampled rows, with `file` and `row` columns
    sample_of: int  # rows in the shards the sample was drawn from
    score_columns: list[str]
    thresholds: list[Threshold]
    reason_stage: dict[str, str]  # reject reason -> the stage that rejected it
    grid_rows: dict[str, pa.Table]  # "kept" and each reject reason -> up to `per_grid` rows
    cluster_sizes: np.ndarray | None  # kept rows per dedup cluster (_state/), or None
    files: dict[str, str] = field(default_factory=dict)  # file id -> path


def load(output_url: str, *, max_rows: int = 4000, per_grid: int = 12, seed: int = 0) -> ReportData:
    out = Location.of(output_url)
    if not out.exists(MANIFEST_FILE):
        raise UserError(f"{output_url} holds no {MANIFEST_FILE}: give the --output of a finished `curate run`")
    try:
        manifest = json.loads(out.read_bytes(MANIFEST_FILE))
        manifest["funnel"]["rejected_by_reason"].items()
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserError(
            f"{output_url}/{MANIFEST_FILE} is damaged (not this tool's JSON): run the job again to rewrite it"
        ) from None
    shards = _shard_files(out, manifest)
    rng = random.Random(seed)
    rng.shuffle(shards)

    files: dict[str, str] = {}
    tables, sampled_rows = [], 0
    used = 0
    for used, pair in enumerate(shards, start=1):
        for path in pair:
            if path is None:
                continue
            tables.append(_read(out, path, [*SMALL_COLUMNS, *LABELS, *EMBEDDINGS], files))
            sampled_rows += tables[-1].num_rows
        if sampled_rows >= max_rows:
            break
    sample = (
        pa.concat_tables(tables, promote_options="default")
        if tables
        else pa.table({"status": pa.array([], pa.string())})
    )
    sample_of = sample.num_rows
    if sample.num_rows > max_rows:
        pick = np.sort(np.random.default_rng(seed).choice(sample.num_rows, max_rows, replace=False))
        sample = sample.take(pa.array(pick))
    score_columns = [
        c for c in sample.column_names if pa.types.is_floating(sample.schema.field(c).type) and c not in NOT_SCORES
    ]
    score_columns = [c for c in score_columns if sample.column(c).null_count < sample.num_rows]  # unfilled: no plot

    reasons = list(manifest["funnel"]["rejected_by_reason"])
    grid_rows = _grid_rows(out, sample, reasons, shards[used:], per_grid, files, seed)
    reason_stage = _reason_stages(sample, grid_rows)
    return ReportData(
        output_url=output_url,
        manifest=manifest,
        sample=sample,
        sample_of=sample_of,
        score_columns=score_columns,
        thresholds=thresholds(manifest, score_columns),
        reason_stage=reason_stage,
        grid_rows=grid_rows,
        cluster_sizes=_cluster_sizes(out),
        files=files,
    )


def _read(out: Location, path: str, columns: list[str], files: dict[str, str]) -> pa.Table:
    """Small columns of one file plus every float (score) column; `file` and `row` locate each row."""
    with out.fs.open(path, "rb") as f:
        schema = pq.read_schema(f)
        floats = [x.name for x in schema if pa.types.is_floating(x.type) and x.name not in NOT_SCORES]
        wanted = list(dict.fromkeys(c for c in [*columns, *floats] if c in schema.names))
        table = pq.read_table(f, columns=wanted)
    file_id = str(len(files))
    files[file_id] = path
    table = table.append_column("file", pa.array([file_id] * table.num_rows, pa.string()))
    return table.append_column("row", pa.array(np.arange(table.num_rows, dtype=np.int64)))


def _shard_files(out: Location, manifest: dict) -> list[tuple[str | None, str | None]]:
    """(kept part, rejected part) of every shard of the manifest; a part that is absent is None."""
    present = {status: set(out.files(status)) for status in ("kept", "rejected")}  # one listing each
    pairs = []
    for shard_id in read_shards(out, manifest, columns=["shard_id"]).column("shard_id").to_pylist():
        name = f"part-{shard_id}.parquet"
        pairs.append(tuple(out.path(status, name) if name in present[status] else None for status in present))
    return pairs


def _grid_rows(out, sample, reasons, more_shards, per_grid, files, seed) -> dict[str, pa.Table]:
    """Up to `per_grid` rows for "kept" and for each reason: from the sample, then from rejected/ parts
    not yet read (reason and caption columns only) for reasons the sample holds too few of."""
    rng = np.random.default_rng(seed)

    def pick(table: pa.Table, mask) -> pa.Table:
        rows = table.filter(mask)
        if rows.num_rows > per_grid:
            rows = rows.take(pa.array(np.sort(rng.choice(rows.num_rows, per_grid, replace=False))))
        return rows.select(
            [
                c
                for c in ("key", "caption", "status", "reject_reason", "reject_stage", "file", "row")
                if c in rows.column_names
            ]
        )

    grids = {"kept": pick(sample, pc.equal(sample.column("status"), "kept"))} if sample.num_rows else {}
    for reason in reasons:
        if sample.num_rows:
            grids[reason] = pick(sample, pc.equal(sample.column("reject_reason"), reason))
    short = [r for r in reasons if r not in grids or grids[r].num_rows < per_grid]
    for _, rejected in more_shards:
        if not short or rejected is None:
            continue
        table = _read(out, rejected, SMALL_COLUMNS, files).select(
            ["key", "caption", "status", "reject_reason", "reject_stage", "file", "row"]
        )
        for reason in list(short):
            have = grids.get(reason)
            found = table.filter(pc.equal(table.column("reject_reason"), reason))
            rows = pa.concat_tables([have, found], promote_options="default") if have is not None else found
            grids[reason] = rows.slice(0, per_grid)
            if grids[reason].num_rows >= per_grid:
                short.remove(reason)
    return grids


def _reason_stages(sample: pa.Table, grids: dict[str, pa.Table]) -> dict[str, str]:
    found: dict[str, str] = {}
    for table in [sample, *grids.values()]:
        if "reject_stage" not in table.column_names:
            continue
        for reason, stage in zip(table.column("reject_reason").to_pylist(), table.column("reject_stage").to_pylist()):
            if reason and stage:
                found.setdefault(reason, stage)
    return found


def stage_order(stage: str) -> int:
    order = [s.value for s in Stage]
    return order.index(stage) if stage in order else len(order)


def thresholds(manifest: dict, score_columns: list[str]) -> list[Threshold]:
    """The cuts the run's config made on score columns: clip.min_score, the keep_fraction threshold
    the job computed, and every head's threshold."""
    cfg = manifest.get("config", {})
    found = []
    clip = cfg.get("clip", {})
    if clip.get("min_score") is not None:
        found.append(
            Threshold("clip_score", float(clip["min_score"]), "below", f"clip.min_score {clip['min_score']:g}")
        )
    computed = (manifest.get("clip_threshold") or {}).get("keep_fraction_threshold")
    if computed is not None:
        fraction = manifest["clip_threshold"].get("keep_fraction")
        found.append(Threshold("clip_score", float(computed), "below", f"keep_fraction {fraction:g} -> {computed:.3f}"))
    for head in cfg.get("heads", []) or []:
        if head.get("threshold") is None:
            continue
        column = head.get("column") or head["name"]
        found.append(
            Threshold(
                column,
                float(head["threshold"]),
                head.get("reject", "above"),
                f"{head['name']} {head.get('reject', 'above')} {head['threshold']:g}",
            )
        )
    return [t for t in found if t.column in score_columns or not score_columns]


def near_threshold(sample: pa.Table, threshold: Threshold, per_side: int = 6) -> tuple[pa.Table, pa.Table]:
    """The sampled rows just on the kept side and just on the rejected side of a threshold, nearest first.
    Rows rejected for a reason of another stage are left out: the cut did not decide them."""
    if threshold.column not in sample.column_names or not sample.num_rows:
        return sample.slice(0, 0), sample.slice(0, 0)
    values = sample.column(threshold.column).to_numpy(zero_copy_only=False).astype(np.float64)
    valid = np.isfinite(values)
    above = valid & (values >= threshold.value)
    below = valid & (values < threshold.value)
    kept_side, cut_side = (below, above) if threshold.reject == "above" else (above, below)

    def nearest(mask) -> pa.Table:
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(np.abs(values[idx] - threshold.value), kind="stable")][:per_side]
        return sample.take(pa.array(idx, pa.int64()))

    return nearest(kept_side), nearest(cut_side)


def read_images(out_url: str, files: dict[str, str], rows: pa.Table) -> list[bytes | None]:
    """Image bytes of `rows` (with `file`, `row` columns), reading only the row groups that hold them."""
    out = Location.of(out_url)
    result: list[bytes | None] = [None] * rows.num_rows
    wanted: dict[str, list[tuple[int, int]]] = {}
    for i, (file_id, row) in enumerate(zip(rows.column("file").to_pylist(), rows.column("row").to_pylist())):
        wanted.setdefault(file_id, []).append((i, row))
    for file_id, items in wanted.items():
        with out.fs.open(files[file_id], "rb") as f:
            parquet = pq.ParquetFile(f)
            if "image" not in parquet.schema_arrow.names:
                continue
            starts = np.cumsum([0] + [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)])
            current, column = -1, None  # one row group in memory at a time: items go in row order
            for i, row in sorted(items, key=lambda item: item[1]):
                group = int(np.searchsorted(starts, row, side="right") - 1)
                if group != current:
                    column = image_values(parquet.read_row_group(group, columns=["image"]).column("image"))
                    current = group
                result[i] = column[row - int(starts[group])].as_py()
    return result


def _cluster_sizes(out: Location) -> np.ndarray | None:
    """Rows per dedup cluster from the state the run left (_state/kept/cluster=*.parquet): footers only."""
    from curation.dedup.state import STATE_DIR

    base = out.path(STATE_DIR, "kept")
    if not out.fs.exists(base):
        return None

    def rows(path: str) -> int:
        with out.fs.open(path, "rb") as f:
            return pq.read_metadata(f).num_rows

    paths = sorted(out.fs.glob(f"{base}/cluster=*.parquet"))
    with ThreadPoolExecutor(16) as pool:  # side by side: a request each on an object store
        sizes = list(pool.map(rows, paths))
    return np.array(sizes, dtype=np.int64) if sizes else None
