"""The exports after the write phase: webdataset tars and embedding files written from kept/ (the sinks in
curation/io/sinks/, one Ray task per output shard), for a job (output.formats, output.embeddings) and for
`curate export` on a finished output."""

from __future__ import annotations

import json
from typing import Callable

import ray

from curation.config import Config
from curation.errors import UserError
from curation.execution import init_ray, survive_node_loss
from curation.io.readers import MAX_SHARD_BYTES


def export_formats(cfg: Config, output_url: str, results: list[dict], log) -> list[dict]:
    """The formats output.formats and output.embeddings ask for, besides kept/ and rejected/."""
    from curation.io import sinks

    settings, files = sinks.ExportSettings.of(cfg.output), sinks.kept_files(results)
    summaries = []
    for fmt in sinks.job_formats(cfg.output):
        summaries.append(sinks.export(output_url, fmt, files, settings, map_in_order))
        log(sinks.describe(summaries[-1]))
    return summaries


def export_output(
    output_url: str,
    fmt: str,
    overrides: dict | None = None,
    to_url: str | None = None,
    address: str | None = None,
    log: Callable[[str], None] = print,
    input_url: str | None = None,
) -> dict:
    """`curate export`: write `fmt` from a finished output's kept/, with the run's output settings
    (shard_rows, shard_mb, resize) where `overrides` gives none; returns the sink's summary. Format
    `rejected_images` writes rejected/ with its image bytes read back from the run's input (or from
    `input_url`, where it lies now)."""
    from curation.config import load_config
    from curation.io import sinks
    from curation.io.commit import Location
    from curation.manifest import MANIFEST_FILE, read_shards

    out = Location.of(output_url)
    if not out.exists("_SUCCESS"):
        raise UserError(
            f"{output_url} holds no finished output (no _SUCCESS): point at the --output of a completed run"
        )
    manifest = json.loads(out.read_bytes(MANIFEST_FILE))
    run_output = manifest.get("config", {}).get("output", {})
    section = {k: run_output[k] for k in ("shard_rows", "shard_mb", "resize") if k in run_output}
    section.update(overrides or {})
    settings = [f"output.{key}={json.dumps(value)}" for key, value in section.items()]
    cfg = load_config(None, [*settings, *([f"run.address={address}"] if address else [])])
    init_ray(cfg)
    shards = read_shards(out, manifest, columns=["shard_id", "url", "format", "kept"]).to_pylist()
    files, export_settings = sinks.kept_files(shards), sinks.ExportSettings.of(cfg.output)
    if fmt == "rejected_images":
        files = rejected_files(manifest, shards, input_url)
    summary = survive_node_loss(
        lambda: sinks.export(output_url, fmt, files, export_settings, map_in_order, to_url), log
    )
    log(sinks.describe(summary))
    return summary


def rejected_files(manifest: dict, rows: list[dict], input_url: str | None = None) -> list:
    """The rejected/ files of a finished output, each with the input shard its rows came from: the
    manifest's shard rows (`rows`: shard_id, url, format), or the shards of the same ids under `input_url`."""
    from curation.io.sinks.rejected_images import RejectedFile
    from curation.io.sources import Shard, list_shards

    config = manifest.get("config", {})
    shards = {r["shard_id"]: Shard(shard_id=r["shard_id"], url=r["url"], format=r["format"]) for r in rows}
    if input_url is not None:
        found = {s.shard_id: s for s in list_shards(input_url, config.get("input", {}).get("format", "auto"))}
        absent = sorted(set(shards) - set(found))
        if absent:
            raise UserError(
                f"{input_url} holds no input shard {absent[0]} of this output ({len(absent)} of {len(shards)} "
                "missing): give the folder the job read"
            )
        shards = {shard_id: found[shard_id] for shard_id in shards}
    output = config.get("output", {})
    options = {k: output[k] for k in ("compression", "row_group_size") if k in output}
    max_bytes = config.get("input", {}).get("max_shard_bytes", MAX_SHARD_BYTES)
    return [
        RejectedFile(
            name=f"rejected/part-{r['shard_id']}.parquet",
            shard=shards[r["shard_id"]],
            max_shard_bytes=max_bytes,
            **options,
        )
        for r in sorted(rows, key=lambda r: r["shard_id"])
    ]


@ray.remote(num_cpus=1)
def _call_remote(fn: Callable, item):
    return fn(item)


def map_in_order(fn: Callable, items: list):
    """`fn` over `items` as Ray tasks, two per CPU of the cluster in flight; yields results in item order
    (so a caller holds only the results it has not used yet)."""
    window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    fn_ref = ray.put(fn)
    pending: list = []
    for item in items:
        pending.append(_call_remote.options(scheduling_strategy="SPREAD").remote(fn_ref, item))
        if len(pending) >= window:
            yield ray.get(pending.pop(0))
    while pending:
        yield ray.get(pending.pop(0))
