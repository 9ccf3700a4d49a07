"""The job's per-shard work and its files, with no Ray in sight: the runner schedules these functions.

Layout (docs/architecture.md):
  <work>/job.json                     the run using this work dir (workdir.py)
  <work>/scored/<shard>.parquet       phase 1 output, one per input shard (its presence = committed);
                                      image bytes only where the input shard lacks them (stages/release.py)
  <work>/decisions/<shard>.parquet   phase 2 output, about one shard's rows: key -> dup_of, dup_kind
  <out>/kept/part-<shard>.parquet     phase 3 output, rows sorted by key
  <out>/rejected/part-<shard>.parquet
  <out>/_manifest_shards.parquet, <out>/_manifest.json, <out>/_SUCCESS (last): curation/manifest.py
"""

from __future__ import annotations

import json
import platform
import posixpath
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import __version__
from curation.config import Config
from curation.dedup.decisions import apply_decisions
from curation.dedup.keep_fraction import histogram_metadata, without_histogram
from curation.domain import outside_domain_rows
from curation.errors import UserError
from curation.io import huggingface
from curation.io.commit import Location, parquet_buffer, read_parquet
from curation.io.readers import MAX_SHARD_BYTES, read_image_column, read_images_at, read_shard, source_version
from curation.io.sources import Shard
from curation.io.urls import strip_credentials, strip_credentials_in
from curation.schema import IMAGE_AT, IMAGE_SIZE, SCHEMA_VERSION, SOURCE_COLUMNS, SOURCE_VERSION, Status, conform
from curation.stages.base import BatchStage, set_column
from curation.stages.clip_filter import ClipScoreFilter
from curation.stages.release import SourceChanged, mark_source_bytes, release_source_bytes, restore_source_bytes

DECISIONS_DIR = "decisions"
SHARD_ROWS = "_shard_rows"  # internal column: rows the reader found in the row's shard
STAGE_SECONDS = "_seconds:"  # internal columns: each row's share of a stage's wall time


@dataclass(frozen=True, kw_only=True)
class JobPaths:
    output_url: str
    work_url: str
    storage_options: dict = field(default_factory=dict)

    @property
    def out(self) -> Location:
        return Location.of(self.output_url, self.storage_options)

    @property
    def work(self) -> Location:
        return Location.of(self.work_url, self.storage_options)

    def scored_name(self, shard_id: str) -> str:
        return f"scored/{shard_id}.parquet"

    def decisions_name(self, shard_id: str) -> str:
        """The dedup decisions about one shard's rows (none decided: no file)."""
        return f"{DECISIONS_DIR}/{shard_id}.parquet"

    def scored_ids(self) -> set[str]:
        """The shards whose scored file is committed, from one listing of the work dir's scored/."""
        return {name[: -len(".parquet")] for name in self.work.files("scored") if name.endswith(".parquet")}


def run_stages(stages: list[BatchStage], table: pa.Table) -> pa.Table:
    for stage in stages:
        stage.setup()
        start = time.perf_counter()
        table = stage.process_batch(table)
        table = add_stage_seconds(table, getattr(stage.name, "value", stage.name), time.perf_counter() - start)
    return table


def add_stage_seconds(table: pa.Table, stage: str, seconds: float) -> pa.Table:
    """Spread a stage's wall time over the rows it processed (an internal column per stage): the rows
    of a shard carry their shard's share through every hand-off, and summing gives seconds per stage."""
    if not table.num_rows:
        return table
    column = STAGE_SECONDS + stage
    share = np.full(table.num_rows, seconds / table.num_rows)
    if column in table.column_names:
        share += table.column(column).to_numpy(zero_copy_only=False)
    return set_column(table, column, pa.array(share, pa.float64()))


def stage_seconds(table: pa.Table) -> dict[str, float]:
    """Seconds per stage spent on the rows of `table` (see add_stage_seconds)."""
    return {
        name[len(STAGE_SECONDS) :]: float(pc.sum(table.column(name)).as_py() or 0.0)
        for name in table.column_names
        if name.startswith(STAGE_SECONDS)
    }


# ---- phase 1: score -------------------------------------------------------------------------------


def read_and_prepare(
    shard: Shard, stages: list[BatchStage], paths: JobPaths, schema: pa.Schema, max_shard_bytes: int = MAX_SHARD_BYTES
) -> pa.Table:
    """Read one shard and run the CPU stages. An empty shard is committed right here."""
    start = time.perf_counter()
    version = source_version(shard.url, paths.storage_options)  # before the read: a change during it shows later
    table = read_shard(shard, paths.storage_options, max_shard_bytes)
    table = table.append_column(SHARD_ROWS, pa.array([table.num_rows] * table.num_rows, pa.int64()))
    table = table.append_column(SOURCE_VERSION, pa.array([version] * table.num_rows, pa.string()))
    table = mark_source_bytes(table)
    table = add_stage_seconds(table, "read", time.perf_counter() - start)
    if table.num_rows == 0:
        commit_scored(shard.shard_id, table, paths, schema)
        return table
    return run_stages(stages, table)


def finish_scoring(table: pa.Table, stages: list[BatchStage], paths: JobPaths, schema: pa.Schema) -> pa.Table:
    """Run the post-embedding filters and commit each complete shard in `table` (its columns: `schema`,
    record_schema of the job); returns a summary: rows, seconds per stage, and rows outside the model's
    domain (see curation/domain.py)."""
    table = run_stages(stages, table)
    summary = {"shard_id": [], "rows": [], "stage_seconds": [], "outside_domain": []}
    for shard_id in sorted(set(table.column("source").to_pylist())):
        rows = table.filter(pc.equal(table.column("source"), shard_id))
        expected = rows.column(SHARD_ROWS)[0].as_py()
        if rows.num_rows != expected:
            raise RuntimeError(f"shard {shard_id} arrived split ({rows.num_rows} of {expected} rows)")
        start = time.perf_counter()
        commit_scored(shard_id, rows, paths, schema)
        seconds = {**stage_seconds(rows), "commit": time.perf_counter() - start}
        summary["shard_id"].append(shard_id)
        summary["rows"].append(rows.num_rows)
        summary["stage_seconds"].append(json.dumps(seconds))
        summary["outside_domain"].append(outside_domain_rows(rows))
    return pa.table(summary, schema=SUMMARY_SCHEMA)


SUMMARY_SCHEMA = pa.schema(
    [("shard_id", pa.string()), ("rows", pa.int64()), ("stage_seconds", pa.string()), ("outside_domain", pa.int64())]
)


def commit_scored(shard_id: str, table: pa.Table, paths: JobPaths, schema: pa.Schema) -> None:
    """Write the scored shard; image bytes the input shard holds are not stored again (stages/release.py),
    where it holds them is (schema.SOURCE_COLUMNS). Its metadata holds the histogram of its clip_scores
    that keep_fraction sums (dedup/keep_fraction.py)."""
    table = without_credentials(release_source_bytes(table))
    scored = conform(table, schema)
    for name in SOURCE_COLUMNS:
        if name in table.column_names:
            scored = scored.append_column(name, table.column(name))
    scored = in_key_order(scored)
    scored = scored.replace_schema_metadata({**(scored.schema.metadata or {}), **histogram_metadata(scored)})
    paths.work.write_bytes(parquet_buffer(scored, compression="zstd"), paths.scored_name(shard_id))


def without_credentials(table: pa.Table) -> pa.Table:
    """The rows with their image URLs' user info and secret query values (a signed URL's signature)
    masked: the download stage has used them, and nothing stored may hold them (io/urls.py)."""
    urls = table.column("url")
    suspect = pc.or_(pc.match_substring(urls, "@"), pc.match_substring(urls, "="))
    if not pc.any(suspect).as_py():
        return table
    clean = [strip_credentials(url) if url is not None else None for url in urls.to_pylist()]
    return set_column(table, "url", clean, pa.string())


def in_key_order(table: pa.Table) -> pa.Table:
    """`table` sorted by key. Shards mostly arrive in key order already, and then the table is returned
    as it is (in one chunk per column, as sorting leaves it: same rows, same file bytes): sorting copies
    every column, the image bytes too."""
    keys = table.column("key")
    if table.num_rows < 2 or pc.all(pc.less_equal(keys.slice(0, len(keys) - 1), keys.slice(1))).as_py():
        return table.combine_chunks()
    return table.sort_by("key")


# ---- phase 2: dedup input and decisions -----------------------------------------------------------


def load_decisions(paths: JobPaths, shard_id: str) -> dict[str, tuple[str, str]]:
    """The dedup decisions about one shard's rows (its own file only: curation/phases/dedup.py)."""
    name = paths.decisions_name(shard_id)
    if not paths.work.exists(name):
        return {}
    table = read_parquet(paths.work, name)
    return {k: (d, kind) for k, d, kind in zip(*(table.column(c).to_pylist() for c in ("key", "dup_of", "dup_kind")))}


# ---- phase 3: write -------------------------------------------------------------------------------


def write_final_shard(shard: Shard, cfg: Config, paths: JobPaths, clip_threshold: float | None = None) -> dict:
    """Apply the job-wide clip_score threshold (keep_fraction) and the dedup decisions to one scored
    shard, put back the image bytes it left in the input shard (of the kept rows; of the rejected ones
    too with output.rejected_images), and commit its kept/ and rejected/ files."""
    shard_id = shard.shard_id
    table = without_histogram(read_parquet(paths.work, paths.scored_name(shard_id)))
    if clip_threshold is not None:
        table = ClipScoreFilter(min_score=clip_threshold).process_batch(table)
    table = apply_decisions(table, load_decisions(paths, shard_id))
    if cfg.output.keep_images:
        rejected = pc.equal(table.column("status"), Status.REJECTED.value)
        wanted = pc.invert(rejected) if not cfg.output.rejected_images else None
        table = with_source_bytes(table, shard, paths, cfg.input.max_shard_bytes, wanted)
        if not cfg.output.rejected_images:  # the row names its bytes: source, key, url, sha256
            table = set_column(table, "image", pc.if_else(rejected, pa.scalar(None, pa.binary()), table["image"]))
    else:
        table = set_column(table, "image", pa.nulls(table.num_rows, pa.binary()))
    table = in_key_order(table.drop_columns([c for c in SOURCE_COLUMNS if c in table.column_names]))
    result = {"shard_id": shard_id, "rows": table.num_rows, "reasons": {}}
    for status in Status:
        part = table.filter(pc.equal(table.column("status"), status.value))
        part = huggingface.with_features(part, decode_images=status is Status.KEPT)  # PIL images in datasets
        data = parquet_buffer(part, compression=cfg.output.compression, row_group_size=cfg.output.row_group_size)
        result[status.value] = part.num_rows
        result[f"{status.value}_sha256"] = paths.out.write_bytes(data, final_file(status.value, shard_id))
        if status is Status.REJECTED:
            result["reasons"] = dict(Counter(part.column("reject_reason").to_pylist()))
    return result


def with_source_bytes(
    table: pa.Table,
    shard: Shard,
    paths: JobPaths,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    wanted: pa.ChunkedArray | pa.Array | None = None,
) -> pa.Table:
    """The scored shard with the image bytes the score phase left in the input shard read back: of the
    rows `wanted` (a boolean mask; None: every row). Where the input file is the version the score phase
    read (readers.source_version) they are read by position, only those rows', and put back unhashed;
    otherwise (a scored shard of an earlier version, an input touched or copied since) every image of the
    shard is read, under the same per-shard cap as the score phase read them, and put back by `sha256`,
    which refuses an input whose bytes changed."""
    missing = pc.and_(pc.is_null(table.column("image")), pc.is_valid(table.column("sha256")))
    if wanted is not None:
        missing = pc.and_(missing, pc.fill_null(wanted, False))
    rows = np.flatnonzero(missing.to_numpy(zero_copy_only=False))
    if not len(rows):
        return table
    restored = _by_position(table, rows, shard, paths, max_shard_bytes)
    if restored is not None:
        return restored
    try:
        return restore_source_bytes(
            table, read_image_column(shard, paths.storage_options, max_shard_bytes), missing.to_numpy(False)
        )
    except SourceChanged as changed:
        raise UserError(
            f"input shard {shard.url} changed since it was scored (it no longer holds the image of {changed}): "
            f"restore it, or delete {paths.work_url} to score the input again"
        ) from None


def _by_position(table: pa.Table, rows: np.ndarray, shard: Shard, paths: JobPaths, max_shard_bytes: int):
    """`table` with the image bytes of `rows` read at the positions the score phase recorded, or None
    when it recorded none or the input file is not the version it read (with_source_bytes hashes then)."""
    if not all(name in table.column_names for name in SOURCE_COLUMNS):
        return None
    index = pa.array(rows)
    at, sizes = table.column(IMAGE_AT).take(index), table.column(IMAGE_SIZE).take(index)
    versions = set(table.column(SOURCE_VERSION).take(index).to_pylist())
    if at.null_count or sizes.null_count or len(versions) != 1:
        return None
    if versions.pop() != source_version(shard.url, paths.storage_options):
        return None
    found = read_images_at(shard, at.to_pylist(), paths.storage_options, max_shard_bytes)
    if found is None or len(found) != len(rows):
        return None
    if not pc.all(pc.equal(pc.binary_length(found).cast(pa.int64()), sizes)).as_py():
        return None  # not the bytes that were scored: let the hashes tell
    positions = np.full(table.num_rows, -1, np.int64)
    positions[rows] = np.arange(len(rows))
    images = table.column("image")
    placed = found.take(pa.array(positions, mask=positions < 0))
    wanted = pa.array(positions >= 0)
    return set_column(table, "image", pc.if_else(wanted, placed.cast(images.type), images))


# ---- job bookkeeping ------------------------------------------------------------------------------


def read_json(location: Location, name: str, keys: dict[str, type]) -> dict | None:
    """A JSON object this tool wrote, or None when the file is not one (bad JSON, not UTF-8, a key missing
    or of another type)."""
    try:
        data = json.loads(location.read_bytes(name))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or any(not isinstance(data.get(key), kind) for key, kind in keys.items()):
        return None
    return data


def final_file(status: str, shard_id: str) -> str:
    """An output file, relative to the output: kept/part-<shard>.parquet or rejected/part-<shard>.parquet."""
    return f"{status}/part-{shard_id}.parquet"


def remove_stale_outputs(paths: JobPaths, shards: list[Shard]) -> list[str]:
    """Remove what kept/ and rejected/ hold besides this job's files: part files an earlier run of other
    inputs left (its _work/ deleted, its files not), and temporary files of failed or killed writes.
    Returns the removed paths, relative to the output (the manifest lists them)."""
    out = paths.out
    expected = {final_file(status.value, shard.shard_id) for status in Status for shard in shards}
    found = [posixpath.relpath(path, out.root) for status in Status for path in out.fs.find(out.path(status.value))]
    removed = sorted(relative for relative in found if relative not in expected)
    if removed:
        out.fs.rm([out.path(relative) for relative in removed])  # one call: a batch delete on object stores
    return removed


def funnel(input_rows: int, shard_results: list[dict]) -> dict:
    reasons: Counter = Counter()
    for result in shard_results:
        reasons.update(result["reasons"])
    kept = sum(r[Status.KEPT.value] for r in shard_results)
    return {
        "input": input_rows,
        "kept": kept,
        "rejected": sum(r[Status.REJECTED.value] for r in shard_results),
        "rejected_by_reason": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def versions() -> dict:
    names = ("ray", "pyarrow", "torch", "open_clip_torch", "pillow", "numpy")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"curation": __version__, "python": platform.python_version(), **found}


def job_manifest(cfg, model_id, shards, results, timings, attempt, resumed_shards, shards_file: dict) -> dict:
    """The manifest's totals; `shards_file`: what manifest.write_shards says of the per-shard entries."""
    from curation.manifest import inputs_digest

    return {
        "schema_version": SCHEMA_VERSION,
        "inputs": {"shards": len(shards), "digest": inputs_digest(s.url for s in shards)},
        "shards_file": shards_file,
        "config": strip_credentials_in(cfg.model_dump(mode="json")),  # e.g. run.address ray://user:pw@head
        "config_digest": cfg.digest(),
        "model_id": model_id,
        "versions": versions(),
        "funnel": funnel(sum(r["rows"] for r in results), results),
        "resume": {"attempt": attempt, "shards_scored_in_earlier_attempts": resumed_shards},
        "timings": timings,
    }
