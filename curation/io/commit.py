"""Write files so readers never see a partial one: write a temporary name, then commit by rename.

On object stores a rename is a copy; there the run's `_SUCCESS` marker (written last, after the
manifest listing every file and its checksum) is the commit point readers rely on.
"""

from __future__ import annotations

import hashlib
import posixpath
import uuid
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

TMP_PREFIX = ".tmp-"  # a file being written; committed by a rename to its final name


@dataclass(frozen=True)
class Location:
    """A directory URL and the filesystem behind it."""

    fs: fsspec.AbstractFileSystem
    root: str

    @classmethod
    def of(cls, url: str, storage_options: dict | None = None) -> "Location":
        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        return cls(fs=fs, root=root.rstrip("/"))

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open(self.path(*parts), "rb") as f:
            return f.read()

    def write_bytes(self, data: bytes | pa.Buffer, *parts: str) -> str:
        """Atomically write `data` (bytes or an Arrow buffer, written without a copy); returns its sha256.
        A write that fails (a full disk) removes its temporary file."""
        final = self.path(*parts)
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        tmp = posixpath.join(posixpath.dirname(final), f"{TMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(final)}")
        try:
            with self.fs.open(tmp, "wb") as f:
                f.write(data)
            self.fs.mv(tmp, final)
        except BaseException:
            self._discard(tmp)
            raise
        return hashlib.sha256(data).hexdigest()

    def _discard(self, path: str) -> None:
        try:
            if self.fs.exists(path):
                self.fs.rm(path)
        except Exception:  # noqa: BLE001 - the write's own error is the one to report
            pass

    def remove_temporaries(self, *parts: str) -> list[str]:
        """Remove the temporary files that writes of earlier attempts left under this folder (a killed
        process cannot clean up after itself); returns their paths relative to the location's root.
        Call it only while nothing writes here."""
        folder = self.path(*parts)
        if not self.fs.exists(folder):
            return []
        found = [p for p in self.fs.find(folder) if posixpath.basename(p).startswith(TMP_PREFIX)]
        try:
            if found:
                self.fs.rm(found)  # one call: a batch delete on object stores
        except FileNotFoundError:  # one went meanwhile: the others one by one
            for path in found:
                self._discard(path)
        return sorted(posixpath.relpath(p, self.root) for p in found)

    def files(self, *parts: str) -> list[str]:
        """The committed files under a folder (temporaries left out), relative to it, sorted: one listing
        (an object store pages it), nothing for a folder that is not there."""
        folder = self.path(*parts)
        found = (posixpath.relpath(p, folder) for p in self.fs.find(folder))
        return sorted(p for p in found if not posixpath.basename(p).startswith(TMP_PREFIX))

    def remove(self, *parts: str) -> None:
        path = self.path(*parts)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)


# Columns of already-compressed bytes (JPEG/PNG/WebP): every value differs, so dictionary encoding
# only hashes megabytes to give up, a min/max of image bytes answers no query, and a codec only
# spends CPU on them (they are written uncompressed whatever the other columns use).
ENCODED_COLUMNS = frozenset({"image"})


def parquet_buffer(table: pa.Table, *, compression: str | dict = "zstd", row_group_size: int = 1024) -> pa.Buffer:
    """Serialise deterministically (same table and options give the same bytes) into an Arrow buffer,
    which `Location.write_bytes` writes and hashes without copying it: shards of image bytes are large."""
    sink = pa.BufferOutputStream()
    if isinstance(compression, str):  # compressing JPEG bytes again costs CPU and saves nothing
        compression = {name: "none" if name in ENCODED_COLUMNS else compression for name in table.column_names}
    if ENCODED_COLUMNS.isdisjoint(table.column_names):
        encoded = {"use_dictionary": True, "write_statistics": True}
    else:
        leaves = [path for f in table.schema if f.name not in ENCODED_COLUMNS for path in _leaf_paths(f.name, f.type)]
        encoded = {"use_dictionary": leaves, "write_statistics": leaves}
    if not table.num_rows:
        # No row group at all rather than one of 0 rows: readers that size their batches by the first
        # row group (Hugging Face datasets) fail on an empty one, and a shard may keep nothing.
        pq.ParquetWriter(sink, table.schema, compression=compression, **encoded).close()
        return sink.getvalue()
    pq.write_table(
        table,
        sink,
        compression=compression,
        row_group_size=row_group_size,
        **encoded,
    )
    return sink.getvalue()


def parquet_bytes(table: pa.Table, *, compression: str | dict = "zstd", row_group_size: int = 1024) -> bytes:
    return parquet_buffer(table, compression=compression, row_group_size=row_group_size).to_pybytes()


def _leaf_paths(name: str, type_: pa.DataType) -> list[str]:
    """Parquet column paths under an Arrow field (lists store their values as `<name>.list.element`)."""
    if pa.types.is_struct(type_):
        return [
            p
            for i in range(type_.num_fields)
            for p in _leaf_paths(f"{name}.{type_.field(i).name}", type_.field(i).type)
        ]
    if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        return _leaf_paths(f"{name}.list.element", type_.value_type)
    return [name]


def read_parquet(location: Location, *parts: str, columns: list[str] | None = None) -> pa.Table:
    with location.fs.open(location.path(*parts), "rb") as f:
        return pq.read_table(f, columns=columns)
