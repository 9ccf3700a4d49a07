"""Input format `webdataset`: tars as img2dataset writes them (`<key>.jpg/.txt/.json` members; the
`NNNNN.parquet` beside `NNNNN.tar` is its metadata, not a shard). Read as a stream, never extracted: see
the decisions in `curation.io.readers`."""

from __future__ import annotations

import json
import posixpath
import tarfile

import pyarrow as pa

from curation.errors import UserError
from curation.io.readers import (
    CAPTION_EXTENSIONS,
    IMAGE_EXTENSIONS,
    UNREADABLE_NAME,
    Budget,
    RawSample,
    clean_name,
    clean_url,
    damage_row,
    open_regular,
    reject_sample,
)
from curation.io.sources import Listing, Shard, image_column
from curation.schema import RejectReason

NAME = "webdataset"
MAX_MEMBER_BYTES = 256 << 20
MAX_JSON_BYTES = 1 << 20  # webdataset's .json holds a few hundred bytes of metadata
MAX_HEADER_BYTES = 1 << 20  # a GNU long name or a pax header: a path, a few records
_TAR_DAMAGE = (tarfile.TarError, EOFError)


def detect(listing: Listing) -> list[str]:
    """Every `.tar`; a Parquet with image bytes beside a same-named tar makes the layout ambiguous."""
    tars = listing.with_suffix(".tar")
    for tar in tars:
        stem = tar[: -len(".tar")]
        schema = listing.schema(f"{stem}.parquet")
        if schema is not None and image_column(schema.names):
            raise UserError(
                f"input holds {stem}.parquet with image bytes beside {posixpath.basename(stem)}.tar: which of the "
                "two is the shard cannot be told; move one of them out of the input"
            )
    return tars if listing.fmt in ("auto", NAME) else []


class _TarInfo(tarfile.TarInfo):
    """Logs every header read on its archive. tarfile ends an archive silently at a cut or garbled
    header; with `ignore_zeros` it skips garbage block by block to the next valid header instead, and
    this log is how the reader still sees, and reports, what was skipped. A GNU long-name or pax header
    over MAX_HEADER_BYTES is garbage too: tarfile would read it into memory whole."""

    @classmethod
    def fromtarfile(cls, tar):
        log = tar.__dict__.setdefault("curation_headers", [])
        try:
            info = super().fromtarfile(tar)
        except tarfile.EOFHeaderError:
            log.append(("zero", tar.offset))
            raise
        except tarfile.InvalidHeaderError:
            log.append(("invalid", tar.offset))
            raise
        except tarfile.TruncatedHeaderError:
            log.append(("truncated", tar.offset))
            raise
        except tarfile.EmptyHeaderError:
            log.append(("eof", tar.offset))
            raise
        log.append(("member", info.offset))
        return info

    def _proc_gnulong(self, tar):
        if self.size > MAX_HEADER_BYTES:
            raise tarfile.InvalidHeaderError(f"long-name header of {self.size} bytes")
        return super()._proc_gnulong(tar)

    def _proc_pax(self, tar):
        if self.size > MAX_HEADER_BYTES:
            raise tarfile.InvalidHeaderError(f"pax header of {self.size} bytes")
        return super()._proc_pax(tar)


def _damage_offsets(headers: list[tuple[str, int]]) -> list[int]:
    """Where the header log shows damage: each run of garbage blocks, a header cut short, and an
    archive that stops right after a member (no end-of-archive zero block: it was cut there)."""
    offsets, previous = [], None
    for kind, offset in headers:
        if kind in ("invalid", "truncated") and previous != "invalid":
            offsets.append(offset)
        elif kind == "eof" and previous == "member":
            offsets.append(offset)
        previous = kind
    return offsets


class _TarSamples:
    """Groups members into samples by name: a member whose slot (image, caption, json) is already
    filled in the open sample of that name starts a new sample of the same name."""

    def __init__(self, max_member_bytes: int, budget: Budget):
        self.seekable = False  # an uncompressed tar: a member's offset in the stream is its offset in the file
        self.samples: list[RawSample] = []
        self._open: dict[str, RawSample] = {}
        self._reading: RawSample | None = None
        self._damaged_at: set[int] = set()
        self._max_member_bytes = max_member_bytes
        self._budget = budget

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if member.isdir():
            return  # no data: not a sample
        # tarfile's name is the whole name (GNU long name, pax path): split it before it is cleaned and
        # cut, so that the image and the caption of a long name still make one sample.
        path = member.name[2:] if member.name.startswith("./") else member.name
        stem, ext = _split_member_name(path)
        slot = _slot(ext)
        sample = self._sample_for(clean_name(stem) or "?", slot)
        if _unsafe_path(member.name):
            reject_sample(sample, RejectReason.UNSAFE_MEMBER_PATH)
        elif not member.isfile() or member.issparse():
            reject_sample(sample, RejectReason.UNSUPPORTED_TAR_MEMBER)
        elif slot is None:
            return  # a field we do not use (e.g. .cls): its sample is accounted for
        elif member.size > self._max_member_bytes:
            reject_sample(sample, RejectReason.TOO_LARGE)
        elif slot == "json" and member.size > MAX_JSON_BYTES:
            return  # not webdataset's metadata: left unparsed, the sample has no url
        elif not self._budget.take(member.size):
            reject_sample(sample, RejectReason.SHARD_TOO_LARGE)
        else:
            self._reading = sample
            payload = _read_member(tar, member)
            self._reading = None
            if slot == "image":
                sample.image = payload
                sample.image_at = member.offset_data if self.seekable else None
            elif slot == "caption":
                sample.caption = payload
            else:
                sample.url = _url_from_json(payload)

    def broken(self, offset: int) -> None:
        """Reading stopped on damage: the sample being read, or a row for the break, is broken."""
        if self._reading is not None:
            reject_sample(self._reading, RejectReason.BROKEN_TAR_MEMBER)
        else:
            self.damaged_at(offset)

    def damaged_at(self, offset: int) -> None:
        if offset not in self._damaged_at:
            self._damaged_at.add(offset)
            self.samples.append(damage_row(f"!damage@{offset}", RejectReason.BROKEN_TAR_MEMBER))

    def found_nothing(self) -> bool:
        return len(self.samples) == len(self._damaged_at)

    def _sample_for(self, stem: str, slot: str | None) -> RawSample:
        sample = self._open.get(stem)
        if sample is None or (slot is not None and slot in sample.slots):
            sample = RawSample(name=stem)
            self.samples.append(sample)
            self._open[stem] = sample
        if slot is not None:
            sample.slots.add(slot)
        return sample


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, piece: int = 1 << 20) -> bytearray:
    """A member's bytes, read into one buffer a megabyte at a time (tarfile's own read() of a streamed
    member joins and slices what it decompressed: two or three copies of a large member at once)."""
    data = bytearray(member.size)
    view, source, done = memoryview(data), tar.extractfile(member), 0
    while done < member.size:
        got = source.readinto(view[done : done + piece])
        if not got:
            raise tarfile.ReadError("unexpected end of data")
        done += got
    return data


def read(shard: Shard, storage_options: dict, budget: Budget) -> tuple[list[RawSample], None]:
    grouper = _TarSamples(MAX_MEMBER_BYTES, budget)
    unreadable = [damage_row(UNREADABLE_NAME, RejectReason.UNREADABLE_SHARD)]
    with open_regular(shard.url, storage_options) as raw:
        try:
            # Streaming mode: no seeks, so it works the same on object stores.
            tar = tarfile.open(fileobj=raw, mode="r|*", tarinfo=_TarInfo, ignore_zeros=True)
        except _TAR_DAMAGE:
            return unreadable, None
        grouper.seekable = getattr(tar.fileobj, "comptype", None) == "tar"
        with tar:
            try:
                for member in tar:
                    grouper.add(tar, member)
            except _TAR_DAMAGE:
                grouper.broken(tar.offset)
            for offset in _damage_offsets(tar.__dict__.get("curation_headers", [])):
                grouper.damaged_at(offset)
    if grouper.found_nothing() and grouper.samples:
        return unreadable, None  # damage and not one member: not a tar at all
    return grouper.samples, None


def read_images_at(shard: Shard, storage_options: dict, offsets: list[int], max_shard_bytes: int) -> pa.Array | None:
    """The image members' bytes at `offsets` (their data offsets in the tar, as `read` records them), each
    up to the next member header's size field: one seek and one read per member, in file order, no other
    member read. None when an offset holds no member header (the file is not the one that was read)."""
    order = sorted(range(len(offsets)), key=offsets.__getitem__)
    found: list[bytes | None] = [None] * len(offsets)
    with open_regular(shard.url, storage_options) as f:
        for i in order:
            if offsets[i] < tarfile.BLOCKSIZE:
                return None
            f.seek(offsets[i] - tarfile.BLOCKSIZE)
            header = f.read(tarfile.BLOCKSIZE)
            try:
                size = tarfile.TarInfo.frombuf(header, tarfile.ENCODING, "surrogateescape").size
            except tarfile.HeaderError:
                return None
            if size > MAX_MEMBER_BYTES:
                return None
            found[i] = f.read(size)
    return pa.array(found, pa.binary())


def _split_member_name(name: str) -> tuple[str, str]:
    """webdataset's split: the key is the path up to the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not stem:  # ".hidden": no key before the dot
        stem, ext = base, ""
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _slot(ext: str) -> str | None:
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in CAPTION_EXTENSIONS:
        return "caption"
    if ext == "json":
        return "json"
    return None


def _unsafe_path(name: str) -> bool:
    return name.startswith("/") or ".." in name.split("/")


def _url_from_json(payload: bytes) -> str | None:
    try:
        meta = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return clean_url(meta.get("url")) if isinstance(meta, dict) else None
