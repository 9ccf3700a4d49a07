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

    def write_bytes(self, data: bytes, *parts: str) -> str:
        """Atomically write `data`; returns its sha256."""
        final = self.path(*parts)
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        tmp = posixpath.join(posixpath.dirname(final), f".tmp-{uuid.uuid4().hex}-{posixpath.basename(final)}")
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, final)
        return hashlib.sha256(data).hexdigest()

    def remove(self, *parts: str) -> None:
        path = self.path(*parts)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)


def parquet_bytes(table: pa.Table, *, compression: str = "zstd", row_group_size: int = 1024) -> bytes:
    """Serialise deterministically: same table and options give the same bytes."""
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression=None if compression == "none" else compression,
        row_group_size=row_group_size,
        write_statistics=True,
    )
    return sink.getvalue().to_pybytes()


def read_parquet(location: Location, *parts: str, columns: list[str] | None = None) -> pa.Table:
    with location.fs.open(location.path(*parts), "rb") as f:
        return pq.read_table(f, columns=columns)
