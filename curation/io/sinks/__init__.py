"""Export sinks: training-ready layouts written from a finished output's kept/ rows (docs/export.md).

One module per sink, registered in SINKS: `webdataset` (img2dataset's tars, which open_clip's trainer
reads) and `embeddings` (clip-retrieval's .npy + metadata Parquet); and `rejected_images` (rejected/ with
its image bytes read back from the input: `curate export --rejected-images`, whose `files` are rejected/'s,
not kept/'s). A sink module has
- DIRECTORY: where it writes under the output by default;
- owns(relative path) -> bool: the files it writes (and may replace);
- export(source, files, dest, settings, map_in_order) -> summary dict;
- describe(summary) -> the line a job prints.

The export reads kept/ with pyarrow, one row group at a time. The driver plans the output shards from
the kept files' row counts (and, with shard_mb, from the sample sizes tasks compute, one kept file at a
time), never holding the rows; each output shard is written by one task. `map_in_order(fn, items)` runs
the tasks (Ray tasks when the runner passes its own, else one after another in this process) and
yields their results in the order of `items`. The same kept/ gives the same bytes, whatever ran it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import posixpath
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from curation.config import OutputConfig, ResizeConfig
from curation.errors import UserError
from curation.io.commit import Location

MapInOrder = Callable[[Callable, list], Iterable]
EXPORT_FILE = "_export.json"  # written last: the export is complete


def serial_map(fn: Callable, items: list) -> Iterator:
    """map_in_order without workers: one task after another, in this process."""
    return map(fn, items)


@dataclass(frozen=True)
class KeptFile:
    """A kept/ file of a finished output: its path under the output and its rows."""

    name: str  # e.g. kept/part-00000.parquet
    rows: int


@dataclass(frozen=True)
class Segment:
    """Rows [start, stop) of one kept file."""

    name: str
    start: int
    stop: int


@dataclass(frozen=True)
class ExportSettings:
    shard_rows: int = 10_000
    shard_mb: float | None = None
    resize: ResizeConfig | None = None

    @classmethod
    def of(cls, output: OutputConfig) -> "ExportSettings":
        return cls(shard_rows=output.shard_rows, shard_mb=output.shard_mb, resize=output.resize)


class ShardPlanner:
    """Cuts the kept rows, in order (kept files by name, rows by key), into output shards of at most
    `shard_rows` rows and, where sizes are given, of at most `max_bytes` bytes as `shard_size` counts a
    shard from its samples' sizes (a sample larger than that makes a shard of its own)."""

    def __init__(self, shard_rows: int, max_bytes: int | None = None, shard_size: Callable[[int], int] = int):
        self.shard_rows, self.max_bytes, self.shard_size = shard_rows, max_bytes, shard_size
        self.shards: list[list[Segment]] = []
        self._open: list[Segment] = []
        self._rows = self._bytes = 0

    def add_file(self, name: str, rows: int, sizes: np.ndarray | None = None) -> None:
        """The next kept file's rows; `sizes`: each row's sample size in bytes."""
        start = 0
        if sizes is None:
            while start < rows:
                take = min(rows - start, self.shard_rows - self._rows)
                self._open.append(Segment(name, start, start + take))
                self._rows += take
                start += take
                if self._rows == self.shard_rows:
                    self._close()
            return
        for i, size in enumerate(sizes.tolist()):
            full = self._rows == self.shard_rows
            too_big = self.max_bytes is not None and self.shard_size(self._bytes + size) > self.max_bytes
            if self._rows and (full or too_big):
                if i > start:
                    self._open.append(Segment(name, start, i))
                self._close()
                start = i
            self._rows += 1
            self._bytes += size
        if rows > start:
            self._open.append(Segment(name, start, rows))

    def finish(self) -> list[list[Segment]]:
        self._close()
        return self.shards

    def _close(self) -> None:
        if self._open:
            self.shards.append(self._open)
        self._open, self._rows, self._bytes = [], 0, 0


def row_shards(files: list[KeptFile], shard_rows: int) -> list[list[Segment]]:
    """Output shards of `shard_rows` consecutive kept rows (the last one shorter)."""
    planner = ShardPlanner(shard_rows)
    for f in files:
        planner.add_file(f.name, f.rows)
    return planner.finish()


def read_segment(source: Location, segment: Segment, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The rows of a segment, one row group (or less) at a time."""
    with source.fs.open(source.path(segment.name), "rb") as f:
        parquet = pq.ParquetFile(f)
        first = 0
        for group in range(parquet.num_row_groups):
            rows = parquet.metadata.row_group(group).num_rows
            lo, hi = max(segment.start, first), min(segment.stop, first + rows)
            if lo < hi:
                table = parquet.read_row_group(group, columns=columns, use_threads=False)
                yield table.slice(lo - first, hi - lo)
            first += rows
            if first >= segment.stop:
                break


def read_file(source: Location, name: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """A whole kept file, one row group at a time."""
    with source.fs.open(source.path(name), "rb") as f:
        parquet = pq.ParquetFile(f)
        for group in range(parquet.num_row_groups):
            yield parquet.read_row_group(group, columns=columns, use_threads=False)


def kept_schema(source: Location, files: list[KeptFile]) -> pa.Schema | None:
    """The schema of kept/ (from the first file's footer); None when there are no kept files."""
    if not files:
        return None
    with source.fs.open(source.path(files[0].name), "rb") as f:
        return pq.read_schema(f)


@contextlib.contextmanager
def open_for_writing(dest: Location, name: str):
    """A file written as a stream and seen complete or not at all: a temporary name renamed on a local
    disk; the final name on an object store, where an upload only appears once complete."""
    final = dest.path(name)
    dest.fs.makedirs(posixpath.dirname(final), exist_ok=True)
    local = isinstance(dest.fs, LocalFileSystem)
    target = posixpath.join(posixpath.dirname(final), f".tmp-{uuid.uuid4().hex}-{posixpath.basename(final)}")
    with dest.fs.open(target if local else final, "wb") as f:
        yield f
    if local:
        dest.fs.mv(target, final)


# ---- the registry and the two entry points --------------------------------------------------------


# A sink is a module with DIRECTORY, owns, export and describe (see above); adding one is one line here.
SINKS = {
    "webdataset": "curation.io.sinks.webdataset",
    "embeddings": "curation.io.sinks.embeddings",
    "rejected_images": "curation.io.sinks.rejected_images",  # `curate export --rejected-images`: not a job format
}


def sink(name: str):
    if name not in SINKS:
        raise UserError(f"unknown export format {name!r}: use one of {', '.join(SINKS)}")
    return importlib.import_module(SINKS[name])


def kept_files(shard_results: list[dict]) -> list[KeptFile]:
    """The kept/ files of a job, in order, from its per-shard results (shard_id and kept: rows of the
    manifest's shard file, curation/manifest.py)."""
    ordered = sorted(shard_results, key=lambda r: r["shard_id"])
    return [KeptFile(name=f"kept/part-{r['shard_id']}.parquet", rows=int(r["kept"])) for r in ordered]


def export(
    output_url: str,
    fmt: str,
    files: list[KeptFile],
    settings: ExportSettings,
    map_in_order: MapInOrder = serial_map,
    to_url: str | None = None,
) -> dict:
    """Write `fmt` from the kept files of the output at `output_url` to `to_url` (default: a folder of the
    output named after the sink). Files the sink wrote there before are replaced; a folder holding
    anything else is refused. Returns the sink's summary, also written as `_export.json`, last."""
    module = sink(fmt)
    to_url = to_url or f"{output_url.rstrip('/')}/{module.DIRECTORY}"
    source, dest = Location.of(output_url), Location.of(to_url)
    _clear(dest, to_url, module.owns)
    summary = module.export(source, files, dest, settings, map_in_order)
    summary = {"format": fmt, "url": to_url.rstrip("/"), **summary, "source": output_url.rstrip("/")}
    dest.write_bytes(json.dumps(summary, indent=2, sort_keys=True).encode(), EXPORT_FILE)
    return summary


def describe(summary: dict) -> str:
    return sink(summary["format"]).describe(summary)


def job_formats(output: OutputConfig) -> list[str]:
    """The export formats a job's output config asks for, besides Parquet."""
    return [f for f in output.formats if f != "parquet"] + (["embeddings"] if output.embeddings else [])


def _clear(dest: Location, url: str, owns: Callable[[str], bool]) -> None:
    """Remove what an earlier export wrote to `dest`; refuse a folder holding other files."""
    if not dest.fs.exists(dest.root):
        return
    dest.fs.invalidate_cache()
    found = [posixpath.relpath(p, dest.root) for p in dest.fs.find(dest.root)]
    foreign = sorted(p for p in found if not (owns(p) or p == EXPORT_FILE or posixpath.basename(p).startswith(".tmp-")))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UserError(f"{url} holds files an export did not write ({shown}): choose an empty folder")
    if dest.exists(EXPORT_FILE):
        dest.remove(EXPORT_FILE)  # first: a half-replaced export is never taken for a complete one
    for path in sorted(found):
        if path != EXPORT_FILE:
            dest.remove(path)
