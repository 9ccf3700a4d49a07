"""Read one input shard into an Arrow table of raw records (key, source, url, caption, image).

Every sample found becomes a row, also an incomplete, damaged or hostile one: it is rejected here with a
reason, never dropped. Nothing is ever extracted to disk and no path is built from a member name.

Decisions (exercised by tests/io/test_hostile_inputs.py):
- Keys are `<shard id>/<name>`: a tar sample's member path without its extension (webdataset's
  `__key__`), a table row's `key` column, else a short hash of its `url` (URL lists never key by row
  position; a row with neither falls back to `row<index>`). Control characters in a name become `?`;
  a name over MAX_NAME_CHARS is cut and suffixed with its hash.
- Keys are unique within a shard. A later sample whose key was already seen (duplicate tar member
  names, a second image for the same stem, a repeated `key` or URL) keeps its data, gets the key
  `<key>~dup<N>` (the first free N), and is rejected `duplicate_key`: which of two same-named samples
  is the real one cannot be told, and keeping both under one key would break exactly-once output.
- Captions are decoded as UTF-8 with replacement characters and NULs are removed. A caption longer than
  MAX_CAPTION_CHARS is rejected `caption_too_long` rather than truncated and kept (a page of text is not
  a caption); the rejected row stores only its first MAX_CAPTION_CHARS characters. A caption that is absent, null, NaN or not
  text (numbers, lists) is `missing_caption`, and so is an empty CSV cell (CSV has no null); another
  empty caption reaches the basic filter (`caption_too_short`).
- Tars are read as a stream. A member with an absolute path or a `..` component is `unsafe_member_path`;
  links, devices, fifos and sparse files are `unsupported_tar_member`; a member over MAX_MEMBER_BYTES is
  `too_large` (skipped unread). Damage keeps every sample that can be read: a member cut short rejects
  its sample as `broken_tar_member`; garbage where a header should be is skipped block by block up to
  the next valid header, and a cut header or a missing end-of-archive marker ends the archive; each of
  these gives a row `<shard>/!damage@<offset>` rejected `broken_tar_member`.
- A file that cannot be parsed at all (not a tar, a Parquet footer of garbage, an empty CSV) is one row
  `<shard>/!unreadable` rejected `unreadable_shard`; an undecodable Parquet row group gives a row
  `<shard>/!row-group-<i>-<j>` rejected `broken_row_group` for each row its footer counts; a CSV
  record with the wrong number of fields is a row `<shard>/!record-<n>` (n counts the header as 1)
  rejected `malformed_row`.
- I/O errors (missing file, denied access, network) are not damage: they raise, so a transient failure
  is retried by the runner and never committed as data.
- URL lists (format "urls") give rows with `image` null that stay kept: the download stage fills them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tarfile
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from curation.io.sources import URL_COLUMN, Shard, header_columns, image_column, parquet_kind, url_list_delimiter
from curation.schema import RejectReason, Stage, Status

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
CAPTION_EXTENSIONS = ("txt", "caption", "text")
CAPTION_COLUMNS = ("caption", "txt", "text")
MAX_CAPTION_CHARS = 4096
# Every reason a reader can reject a row with (stage `read`).
READ_REASONS = (
    RejectReason.MISSING_IMAGE,
    RejectReason.MISSING_CAPTION,
    RejectReason.CAPTION_TOO_LONG,
    RejectReason.DUPLICATE_KEY,
    RejectReason.MALFORMED_ROW,
    RejectReason.UNSAFE_MEMBER_PATH,
    RejectReason.UNSUPPORTED_TAR_MEMBER,
    RejectReason.BROKEN_TAR_MEMBER,
    RejectReason.BROKEN_ROW_GROUP,
    RejectReason.UNREADABLE_SHARD,
    RejectReason.TOO_LARGE,
)
MAX_MEMBER_BYTES = 256 << 20
MAX_NAME_CHARS = 256
DUPLICATE_SUFFIX = "~dup"
UNREADABLE_NAME = "!unreadable"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TAR_DAMAGE = (tarfile.TarError, EOFError)

RAW_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("caption", pa.string()),
        ("image", pa.binary()),
        ("status", pa.string()),
        ("reject_reason", pa.string()),
        ("reject_stage", pa.string()),
    ]
)


@dataclass
class RawSample:
    """A sample as found in the shard; `caption` is the raw value (bytes, str, or any cell value)."""

    name: str
    image: bytes | None = None
    caption: object = None
    url: str | None = None
    reason: RejectReason | None = None  # damage found while reading
    pending_download: bool = False  # a URL-list row: its image comes from the download stage
    slots: set[str] = field(default_factory=set)


def read_shard(shard: Shard, storage_options: dict | None = None) -> pa.Table:
    storage_options = storage_options or {}
    if shard.format == "webdataset":
        return _to_table(shard, _read_tar(shard, storage_options))
    if shard.url.endswith(".parquet"):
        return _to_table(shard, *_read_parquet(shard, storage_options))
    return _to_table(shard, *_read_url_table(shard, storage_options))


def read_image_column(shard: Shard, storage_options: dict | None = None) -> pa.ChunkedArray:
    """The image bytes a shard holds, one value per row, for the write phase (which matches them by
    hash): of a Parquet shard only its image column is read, with no row-by-row work; other shards,
    and Parquet files that fail so (a corrupt row group), are read whole."""
    storage_options = storage_options or {}
    if shard.format != "webdataset" and shard.url.endswith(".parquet"):
        try:
            parquet = pq.ParquetFile(pa.BufferReader(_read_bytes(shard, storage_options)))
            return image_values(
                parquet.read(columns=[image_column(parquet.schema_arrow.names)], use_threads=False).column(0)
            )
        except Exception:  # noqa: BLE001 - damage, or an unusual column type: the full reader copes
            pass
    return read_shard(shard, storage_options).column("image")


def damage_row(name: str, reason: RejectReason) -> RawSample:
    return RawSample(name=name, reason=reason)


# ---- webdataset tars ------------------------------------------------------------------------------


class _TarInfo(tarfile.TarInfo):
    """Logs every header read on its archive. tarfile ends an archive silently at a cut or garbled
    header; with `ignore_zeros` it skips garbage block by block to the next valid header instead, and
    this log is how the reader still sees, and reports, what was skipped."""

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

    def __init__(self, max_member_bytes: int):
        self.samples: list[RawSample] = []
        self._open: dict[str, RawSample] = {}
        self._reading: RawSample | None = None
        self._damaged_at: set[int] = set()
        self._max_member_bytes = max_member_bytes

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if member.isdir():
            return  # no data: not a sample
        name = clean_name(member.name) or "?"
        if name.startswith("./"):
            name = name[2:]
        stem, ext = _split_member_name(name)
        slot = _slot(ext)
        sample = self._sample_for(stem, slot)
        if _unsafe_path(member.name):
            _reject(sample, RejectReason.UNSAFE_MEMBER_PATH)
        elif not member.isfile() or member.issparse():
            _reject(sample, RejectReason.UNSUPPORTED_TAR_MEMBER)
        elif slot is None:
            return  # a field we do not use (e.g. .cls): its sample is accounted for
        elif member.size > self._max_member_bytes:
            _reject(sample, RejectReason.TOO_LARGE)
        else:
            self._reading = sample
            payload = tar.extractfile(member).read()
            self._reading = None
            if slot == "image":
                sample.image = payload
            elif slot == "caption":
                sample.caption = payload
            else:
                sample.url = _url_from_json(payload)

    def broken(self, offset: int) -> None:
        """Reading stopped on damage: the sample being read, or a row for the break, is broken."""
        if self._reading is not None:
            _reject(self._reading, RejectReason.BROKEN_TAR_MEMBER)
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


def _read_tar(shard: Shard, storage_options: dict) -> list[RawSample]:
    grouper = _TarSamples(MAX_MEMBER_BYTES)
    unreadable = [damage_row(UNREADABLE_NAME, RejectReason.UNREADABLE_SHARD)]
    with fsspec.open(shard.url, "rb", **storage_options) as raw:
        try:
            # Streaming mode: no seeks, so it works the same on object stores.
            tar = tarfile.open(fileobj=raw, mode="r|*", tarinfo=_TarInfo, ignore_zeros=True)
        except _TAR_DAMAGE:
            return unreadable
        with tar:
            try:
                for member in tar:
                    grouper.add(tar, member)
            except _TAR_DAMAGE:
                grouper.broken(tar.offset)
            for offset in _damage_offsets(tar.__dict__.get("curation_headers", [])):
                grouper.damaged_at(offset)
    if grouper.found_nothing() and grouper.samples:
        return unreadable  # damage and not one member: not a tar at all
    return grouper.samples


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


def _reject(sample: RawSample, reason: RejectReason) -> None:
    if sample.reason is None:
        sample.reason = reason


def _url_from_json(payload: bytes) -> str | None:
    try:
        meta = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return clean_url(meta.get("url")) if isinstance(meta, dict) else None


# ---- tables: Parquet (image bytes or URL list) and CSV/TSV URL lists ------------------------------


def _read_bytes(shard: Shard, storage_options: dict) -> bytes:
    # All I/O happens here, so whatever fails while parsing afterwards is damage of the file itself.
    with fsspec.open(shard.url, "rb", **storage_options) as f:
        return f.read()


def _read_parquet(shard: Shard, storage_options: dict) -> tuple[list[RawSample], pa.ChunkedArray]:
    data = _read_bytes(shard, storage_options)
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        names = parquet.schema_arrow.names
    except Exception:  # noqa: BLE001 - any unparsable footer is the same damage
        return [damage_row(UNREADABLE_NAME, RejectReason.UNREADABLE_SHARD)], _no_images(1)
    parquet_kind(parquet.schema_arrow, shard.url)  # neither image nor url column: a UserError
    columns = _table_columns(names)
    samples: list[RawSample] = []
    images: list[pa.ChunkedArray] = []
    position = 0
    for i in range(parquet.num_row_groups):
        rows = parquet.metadata.row_group(i).num_rows
        try:
            table = parquet.read_row_group(i, columns=list(columns.values()), use_threads=False)
        except Exception:  # noqa: BLE001 - a corrupt page: keep the other row groups
            # One rejected row per row the footer says the group holds: the funnel still adds up.
            samples += [damage_row(f"!row-group-{i}-{j}", RejectReason.BROKEN_ROW_GROUP) for j in range(rows)]
            images.append(_no_images(rows))
        else:
            group_samples, group_images = _table_samples(table, columns, position)
            samples += group_samples
            images.append(group_images)
        position += rows
    return samples, pa.chunked_array([c for chunked in images for c in chunked.chunks], pa.binary())


def _read_url_table(shard: Shard, storage_options: dict) -> tuple[list[RawSample], pa.ChunkedArray]:
    """A CSV or TSV URL list with a header line naming a `url` column."""
    data = _read_bytes(shard, storage_options)
    delimiter = url_list_delimiter(shard.url)
    names = header_columns(data[: 64 << 10], delimiter)
    if not names:
        return [damage_row(UNREADABLE_NAME, RejectReason.UNREADABLE_SHARD)], _no_images(1)
    bad_lines: list[RawSample] = []

    def on_invalid_row(row) -> str:
        line = row.number if row.number is not None else hashlib.sha256(row.text.encode()).hexdigest()[:12]
        bad_lines.append(damage_row(f"!record-{line}", RejectReason.MALFORMED_ROW))
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_invalid_row
            ),
            # Every column as bytes: no type guessing (keys keep their leading zeros), any encoding.
            convert_options=pacsv.ConvertOptions(column_types={name: pa.binary() for name in names}),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return [damage_row(UNREADABLE_NAME, RejectReason.UNREADABLE_SHARD)], _no_images(1)
    parquet_kind(table.schema, shard.url)
    # CSV cannot tell an empty cell from a missing one: an empty caption is missing (and never fetched).
    samples, images = _table_samples(table, _table_columns(table.column_names), 0)
    for sample in samples:
        if sample.caption == b"":
            sample.caption = None
    return samples + bad_lines, pa.chunked_array([*images.chunks, *_no_images(len(bad_lines)).chunks], pa.binary())


def _table_columns(names: list[str]) -> dict[str, str]:
    """Which file columns give image, caption, url and key (absent roles are left out)."""
    found = {
        "image": image_column(names),
        "caption": next((c for c in CAPTION_COLUMNS if c in names), None),
        "url": URL_COLUMN if URL_COLUMN in names else None,
        "key": "key" if "key" in names else None,
    }
    return {role: column for role, column in found.items() if column}


def _table_samples(table: pa.Table, columns: dict[str, str], position: int) -> tuple[list[RawSample], pa.ChunkedArray]:
    """The samples of a table's rows (without their image bytes) and the image bytes, one per row."""
    n = table.num_rows
    values = {role: table.column(col).to_pylist() for role, col in columns.items() if role != "image"}
    empty = [None] * n
    captions, urls, keys = values.get("caption", empty), values.get("url", empty), values.get("key", empty)
    pending = "image" not in columns
    samples = []
    for i in range(n):
        url = clean_url(urls[i])
        name = clean_name(keys[i]) or (url_name(url) if url else f"row{position + i:09d}")
        samples.append(RawSample(name=name, caption=captions[i], url=url, pending_download=pending))
    return samples, _no_images(n) if pending else image_values(table.column(columns["image"]))


# ---- values -----------------------------------------------------------------------------------------


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return None


def clean_name(value: object) -> str | None:
    """A sample's own name as a key part: text, no control characters, bounded length."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = None if isinstance(value, float) and not math.isfinite(value) else str(value)
    text = _text(value)
    if text is None:
        return None
    text = text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    text = _CONTROL.sub("?", text)
    if len(text) > MAX_NAME_CHARS:
        text = f"{text[: MAX_NAME_CHARS // 2]}~{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    return text or None


def clean_url(value: object) -> str | None:
    text = _text(value)
    text = text.strip() if text is not None else None
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace") if text else None


def url_name(url: str) -> str:
    """The key part of a URL-list row without a key: a short, stable hash of its URL."""
    return hashlib.sha256(url.encode("utf-8", errors="replace")).hexdigest()[:16]


def clean_caption(value: object) -> tuple[str | None, RejectReason | None]:
    """The caption to store and the reason to reject it, if any."""
    text = _text(value)
    if text is None:
        return None, RejectReason.MISSING_CAPTION
    text = text.replace("\x00", "")
    if len(text) > MAX_CAPTION_CHARS:
        return text[:MAX_CAPTION_CHARS], RejectReason.CAPTION_TOO_LONG
    return text, None


def image_values(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A table's image cells as binary, with no row-by-row work (a shard's image bytes are hundreds of
    megabytes): binary cells as they are, a Hugging Face image struct {"bytes": ..., "path": ...} by its
    bytes; cells of any other type (text, numbers) hold no image bytes."""
    if pa.types.is_struct(column.type):
        if column.type.get_field_index("bytes") < 0:
            return _no_images(len(column))
        column = pc.struct_field(column, "bytes")
    binary = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_fixed_size_binary, pa.types.is_binary_view)
    if not any(is_type(column.type) for is_type in binary):
        return _no_images(len(column))
    return column.cast(pa.binary())


def _no_images(rows: int) -> pa.ChunkedArray:
    return pa.chunked_array([pa.nulls(rows, pa.binary())])


# ---- the raw table ----------------------------------------------------------------------------------


def unique_key(key: str, seen: set[str]) -> tuple[str, bool]:
    """`key`, or `key~dup<N>` (first free N) when already seen; and whether it was a duplicate."""
    if key not in seen:
        seen.add(key)
        return key, False
    n = 1
    while f"{key}{DUPLICATE_SUFFIX}{n}" in seen:
        n += 1
    key = f"{key}{DUPLICATE_SUFFIX}{n}"
    seen.add(key)
    return key, True


def _to_table(shard: Shard, samples: list[RawSample], images: pa.ChunkedArray | None = None) -> pa.Table:
    """The raw table of a shard's samples; `images` holds their image bytes (one per sample) where
    they came from a table rather than from the samples themselves."""
    if images is None:
        images = pa.chunked_array([pa.array([sample.image for sample in samples], pa.binary())])
    has_image = images.is_valid().to_numpy(zero_copy_only=False) if samples else []
    columns: dict[str, list] = {name: [] for name in RAW_SCHEMA.names if name != "image"}
    seen: set[str] = set()
    for sample, with_image in zip(samples, has_image):
        key, duplicate = unique_key(f"{shard.shard_id}/{sample.name}", seen)
        caption, caption_reason = clean_caption(sample.caption)
        reason = sample.reason
        if reason is None and duplicate:
            reason = RejectReason.DUPLICATE_KEY
        if reason is None and not with_image and not sample.pending_download:
            reason = RejectReason.MISSING_IMAGE
        if reason is None:
            reason = caption_reason
        columns["key"].append(key)
        columns["source"].append(shard.shard_id)
        columns["url"].append(sample.url)
        columns["caption"].append(caption)
        columns["status"].append(Status.REJECTED.value if reason else Status.KEPT.value)
        columns["reject_reason"].append(reason.value if reason else None)
        columns["reject_stage"].append(Stage.READ.value if reason else None)
    arrays = {name: pa.array(values, RAW_SCHEMA.field(name).type) for name, values in columns.items()}
    return pa.table({**arrays, "image": images}, schema=RAW_SCHEMA).select(RAW_SCHEMA.names)
