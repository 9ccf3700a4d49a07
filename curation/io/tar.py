"""Deterministic tar archives: the same members in the same order give the same bytes, on any machine.

Every member is a regular file with a fixed modification time (2020-01-01), mode 0444, uid and gid 0
and no user or group name (unless `owner` is given), in the POSIX (PAX) format Python's tarfile
writes; the archive ends as tarfile ends one (two zero blocks, then zeros to a whole 10 KiB record).
Callers choose the member order (the sinks sort it); nothing else about the writing machine, its
clock, its users or its umask reaches the bytes.

`member_bytes` gives one member's bytes, so a writer can size an archive before writing it
(`archive_size`), or write it as a stream (`TarWriter`), never holding more than one member.
"""

from __future__ import annotations

import tarfile
from typing import BinaryIO

MTIME = 1_577_836_800  # 2020-01-01T00:00:00Z
MODE = 0o444
BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 20 blocks
END = b"\0" * (2 * BLOCK)  # end-of-archive marker


def member_bytes(name: str, data: bytes, *, owner: str = "") -> bytes:
    """One regular-file member: its header(s), its data, zeros to the next block."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = MTIME
    info.mode = MODE
    info.uid = info.gid = 0
    info.uname = info.gname = owner
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    return header + data + b"\0" * (-len(data) % BLOCK)


def archive_size(members_size: int) -> int:
    """The size of an archive whose members take `members_size` bytes (as member_bytes gives them)."""
    total = members_size + len(END)
    return total + (-total % RECORD)


class TarWriter:
    """Writes members to a binary file object, in the order added; `close` ends the archive (and
    leaves the file object open)."""

    def __init__(self, fileobj: BinaryIO, *, owner: str = ""):
        self._file = fileobj
        self._owner = owner
        self.size = 0

    def add(self, name: str, data: bytes) -> None:
        chunk = member_bytes(name, data, owner=self._owner)
        self._file.write(chunk)
        self.size += len(chunk)

    def close(self) -> None:
        end = archive_size(self.size) - self.size
        self._file.write(b"\0" * end)
        self.size += end


def tar_bytes(members: list[tuple[str, bytes]], *, owner: str = "") -> bytes:
    """A whole archive of (name, data) members, in the order given."""
    import io

    buffer = io.BytesIO()
    writer = TarWriter(buffer, owner=owner)
    for name, data in members:
        writer.add(name, data)
    writer.close()
    return buffer.getvalue()
