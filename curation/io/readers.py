"""Read one input shard into an Arrow table of raw records (key, source, url, caption, image): each input
format (a plug-in under curation/io/formats/) finds its samples; what they share is here.

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
- Text is never trusted to be UTF-8: member names, JSON strings and Parquet string columns may hold
  invalid UTF-8 or lone surrogates (`"\\ud800"` in JSON). Such text is read as bytes and decoded with
  replacement characters (Parquet string columns are read as binary), never raised on.
- Tars are read as a stream. A member's name is the full name tarfile gives (GNU long names and pax
  `path` records included), split into key and extension before it is cleaned or cut, so a long name
  still gives one sample. A member with an absolute path or a `..` component is `unsafe_member_path`;
  links, devices, fifos and sparse files are `unsupported_tar_member`; a member over MAX_MEMBER_BYTES is
  `too_large` (skipped unread). A `.json` member over MAX_JSON_BYTES is not parsed (its sample has no
  url), and a GNU long-name or pax header over MAX_HEADER_BYTES is damage, not read into memory.
  Damage keeps every sample that can be read: a member cut short rejects its sample as
  `broken_tar_member`; garbage where a header should be is skipped block by block up to the next valid
  header, and a cut header or a missing end-of-archive marker ends the archive; each of these gives a
  row `<shard>/!damage@<offset>` rejected `broken_tar_member`.
- Memory per shard is bounded by `max_shard_bytes` (config `input.max_shard_bytes`): the bytes a shard
  brings into memory (every tar member read, a Parquet's image cells) are counted in file order, and
  from the first member or image that would pass the cap on, every sample is rejected
  `shard_too_large` and its bytes are not read (a Parquet file larger than the cap is read from the file
  page by page, not into memory). The rows stay: input = kept + rejected holds for any shard size.
  Text columns of a Parquet and CSV/TSV URL lists (no image bytes) are not counted.
- A file that cannot be parsed at all (not a tar, a Parquet footer of garbage, an empty CSV) is one row
  `<shard>/!unreadable` rejected `unreadable_shard`; an undecodable Parquet row group gives a row
  `<shard>/!row-group-<i>-<j>` rejected `broken_row_group` for each row its footer counts (one row
  `<shard>/!row-group-<i>` when it claims over MAX_DAMAGE_ROWS: a garbled footer may claim billions);
  a CSV record with the wrong number of fields is a row `<shard>/!record-<n>` (n counts the header as
  1) rejected `malformed_row`.
- I/O errors (missing file, denied access, network) are not damage: they raise, so a transient failure
  is retried by the runner and never committed as data.
- Only regular files are read (a symbolic link to one is followed): a FIFO, a device or a socket named
  like a shard would block or never end, so it is a one-line UserError here as in `list_shards`, which
  refuses such an input before anything is read.
- URL lists (format "urls") give rows with `image` null that stay kept: the download stage fills them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import get_protocol

from curation.config import MAX_SHARD_BYTES_LIMIT, InputConfig
from curation.errors import UserError
from curation.io.sources import (
    URL_COLUMN,
    Shard,
    image_column,
    not_regular,
)
from curation.schema import IMAGE_AT, IMAGE_SIZE, RejectReason, Stage, Status

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
    RejectReason.SHARD_TOO_LARGE,
)
MAX_SHARD_BYTES = InputConfig.model_fields["max_shard_bytes"].default
MAX_NAME_CHARS = 256
IMAGE_BATCH_ROWS = 64  # a Parquet image column is read this many rows at a time, against the cap
MAX_DAMAGE_ROWS = 1 << 20  # a broken row group claiming more rows is one row (its footer may lie)
DUPLICATE_SUFFIX = "~dup"
UNREADABLE_NAME = "!unreadable"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

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
    image_at: int | None = None  # where the shard holds the image (IMAGE_AT), for its format's read_images_at


def read_shard(shard: Shard, storage_options: dict | None = None, max_shard_bytes: int = MAX_SHARD_BYTES) -> pa.Table:
    """One shard's raw table, read by its input format (curation/io/formats/)."""
    from curation.io.formats import FORMATS

    samples, images = FORMATS[shard.format].read(shard, storage_options or {}, Budget(max_shard_bytes))
    return to_table(shard, samples, images)


def read_image_column(
    shard: Shard, storage_options: dict | None = None, max_shard_bytes: int = MAX_SHARD_BYTES
) -> pa.ChunkedArray:
    """The image bytes a shard holds, one value per row, for the write phase (which matches them by
    hash): only the image column where the format can read it alone (Parquet), under the same
    `max_shard_bytes` as `read_shard` (so the same rows have bytes); else the shard read whole."""
    from curation.io.formats import FORMATS

    read_images = getattr(FORMATS[shard.format], "read_images", None)
    images = read_images(shard, storage_options or {}, max_shard_bytes) if read_images else None
    return images if images is not None else read_shard(shard, storage_options, max_shard_bytes).column("image")


def read_images_at(
    shard: Shard, positions: list[int], storage_options: dict | None = None, max_shard_bytes: int = MAX_SHARD_BYTES
) -> pa.Array | None:
    """The image bytes at `positions` (values of the IMAGE_AT column the reader wrote), in that order, read
    without the shard's other images where the format can (a tar's members by offset, a Parquet's row
    groups that hold them); None when the format cannot read images by position."""
    from curation.io.formats import FORMATS

    read_at = getattr(FORMATS[shard.format], "read_images_at", None)
    return read_at(shard, storage_options or {}, positions, max_shard_bytes) if read_at else None


def source_version(url: str, storage_options: dict | None = None) -> str:
    """A cheap identity of an input file, from its listing entry: its size and modification time, or what
    an object store gives instead (ETag, generation, checksums). The score phase records it when it reads
    a shard and the write phase compares it, to read the scored rows' image bytes by position."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    fs.invalidate_cache(path)  # asked of the store now, not of a listing this process cached
    info = fs.info(path)
    return json.dumps({k: str(info[k]) for k in sorted(VERSION_FIELDS) if info.get(k) is not None}, sort_keys=True)


# Listing fields that change when a file's content does (local files; S3, GCS, Azure, HTTP).
VERSION_FIELDS = frozenset(
    "size mtime ETag etag LastModified last_modified VersionId version_id generation md5Hash crc32c updated".split()
)


def damage_row(name: str, reason: RejectReason) -> RawSample:
    return RawSample(name=name, reason=reason)


@dataclass
class Budget:
    """The bytes a shard may still bring into memory. Once one value does not fit, none does: the rows
    past the cap are the shard's last ones, whatever their sizes."""

    limit: int
    used: int = 0
    full: bool = False

    def __post_init__(self) -> None:
        self.limit = min(self.limit, MAX_SHARD_BYTES_LIMIT)

    def take(self, size: int) -> bool:
        if self.full or self.used + size > self.limit:
            self.full = True
            return False
        self.used += size
        return True


# ---- opening shard files ----------------------------------------------------------------------------


def open_regular(url: str, storage_options: dict):
    """The shard file opened for reading. A local path must name a regular file (or a link to one): a
    FIFO would block forever on open and a device (/dev/zero) never ends, so either is a UserError. It
    is opened non-blocking and checked on the open descriptor, so no FIFO can block here."""
    if get_protocol(url) not in ("file", "local"):
        return fsspec.open(url, "rb", **storage_options).open()
    path = LocalFileSystem._strip_protocol(url)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UserError(f"input {url} is {not_regular(mode)}: inputs are read from regular files only, remove it")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class GuardedFile:
    """A file handed to pyarrow that remembers its I/O errors: pyarrow raises them as it raises damage
    (OSError), and an I/O error must reach the runner (retried), never become rejected rows."""

    def __init__(self, file):
        self._file = file
        self.error: BaseException | None = None
        self.closed = False

    def _call(self, method, *args):
        try:
            return method(*args)
        except Exception as exc:
            self.error = exc
            raise

    def read(self, size: int = -1) -> bytes:
        return self._call(self._file.read, size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._call(self._file.seek, offset, whence)

    def tell(self) -> int:
        return self._call(self._file.tell)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


class TableSource:
    """A Parquet or CSV shard: its bytes read whole when the file is no larger than `max_bytes` (all the
    I/O happens here, so whatever fails while parsing is damage of the file itself); a larger Parquet is
    read from the file as pyarrow needs it, page by page, with its I/O errors told apart (GuardedFile)."""

    def __init__(self, url: str, storage_options: dict, max_bytes: int):
        self._file = open_regular(url, storage_options)
        self._guard: GuardedFile | None = None
        size = self._size()
        if size is None or size <= max_bytes:
            self.data: bytes | None = self._file.read()
        else:
            self.data = None
            self._guard = GuardedFile(self._file)

    def _size(self) -> int | None:
        try:
            size = self._file.seek(0, os.SEEK_END)
            self._file.seek(0)
        except Exception:  # noqa: BLE001 - not seekable (a stream): read whole, as small files are
            return None
        return size if isinstance(size, int) else None

    def parquet(self, read_dictionary: list[str] | None = None) -> pq.ParquetFile:
        if self._guard is None:
            return pq.ParquetFile(pa.BufferReader(self.data), read_dictionary=read_dictionary)
        return pq.ParquetFile(
            pa.PythonFile(self._guard, mode="r"), read_dictionary=read_dictionary, pre_buffer=False, buffer_size=1 << 20
        )

    def raise_io_error(self) -> None:
        """Inside an `except`: raise the I/O error behind the failure, if there was one."""
        if self._guard is not None and self._guard.error is not None:
            raise self._guard.error

    def __enter__(self) -> "TableSource":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


def read_file_bytes(shard: Shard, storage_options: dict) -> bytes:
    # All I/O happens here, so whatever fails while parsing afterwards is damage of the file itself.
    with open_regular(shard.url, storage_options) as f:
        return f.read()


def reject_sample(sample: RawSample, reason: RejectReason) -> None:
    if sample.reason is None:
        sample.reason = reason


# ---- tables: the rows of a Parquet or CSV file ------------------------------------------------------


def table_columns(names: list[str]) -> dict[str, str]:
    """Which file columns give image, caption, url and key (absent roles are left out)."""
    found = {
        "image": image_column(names),
        "caption": next((c for c in CAPTION_COLUMNS if c in names), None),
        "url": URL_COLUMN if URL_COLUMN in names else None,
        "key": "key" if "key" in names else None,
    }
    return {role: column for role, column in found.items() if column}


def table_samples(table: pa.Table, columns: dict[str, str], position: int, pending: bool) -> list[RawSample]:
    """The samples of a table's rows, without their image bytes; `pending`: URL-list rows."""
    n = table.num_rows
    values = {
        role: _cells(table.column(col), numbers=role == "key") for role, col in columns.items() if role != "image"
    }
    empty = [None] * n
    captions, urls, keys = values.get("caption", empty), values.get("url", empty), values.get("key", empty)
    samples = []
    for i in range(n):
        url = clean_url(urls[i])
        name = clean_name(keys[i]) or (url_name(url) if url else f"row{position + i:09d}")
        samples.append(
            RawSample(name=name, caption=captions[i], url=url, pending_download=pending, image_at=position + i)
        )
    return samples


def _cells(column: pa.ChunkedArray, numbers: bool = False) -> list:
    """A column's values for the row-by-row work: text as bytes (a string column may hold invalid UTF-8,
    which `to_pylist` would raise on: the cleaning decodes it with replacement characters), numbers where
    `numbers`, and None for any other type (lists, structs, dates: no text)."""
    kind = column.type
    try:
        if pa.types.is_dictionary(kind):
            column, kind = column.cast(kind.value_type), kind.value_type
        if pa.types.is_string(kind) or pa.types.is_string_view(kind):
            column = column.cast(pa.binary())
        elif pa.types.is_large_string(kind):
            column = column.cast(pa.large_binary())
        elif not (_is_binary(kind) or (numbers and (pa.types.is_integer(kind) or pa.types.is_floating(kind)))):
            return [None] * len(column)
        return column.to_pylist()
    except (pa.ArrowException, ValueError, OverflowError):  # UnicodeDecodeError is a ValueError
        return [None] * len(column)


def _is_binary(kind: pa.DataType) -> bool:
    return any(
        is_type(kind)
        for is_type in (
            pa.types.is_binary,
            pa.types.is_large_binary,
            pa.types.is_fixed_size_binary,
            pa.types.is_binary_view,
        )
    )


# ---- values -----------------------------------------------------------------------------------------

# Lone surrogates other than surrogateescape's (U+DC80-U+DCFF, which stand for undecodable bytes).
_FOREIGN_SURROGATES = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def valid_text(text: str) -> str:
    """`text` as valid Unicode: the bytes a surrogateescape'd name stands for decoded with replacement
    characters, any other lone surrogate ("\\ud800" from JSON) replaced; Arrow and UTF-8 encoders raise on
    surrogates."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        text = _FOREIGN_SURROGATES.sub("\ufffd", text)
        return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return valid_text(value)
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
    text = _CONTROL.sub("?", text)
    if len(text) > MAX_NAME_CHARS:
        text = f"{text[: MAX_NAME_CHARS // 2]}~{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    return text or None


def clean_url(value: object) -> str | None:
    text = _text(value)
    text = text.strip() if text is not None else None
    return text or None


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


def image_values(column: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """A table's image cells as binary, with no row-by-row work (a shard's image bytes are hundreds of
    megabytes): binary cells as they are, a Hugging Face image struct {"bytes": ..., "path": ...} by its
    bytes; cells of any other type (text, numbers) hold no image bytes."""
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column], column.type)
    if pa.types.is_struct(column.type):
        if column.type.get_field_index("bytes") < 0:
            return no_images(len(column))
        column = pc.struct_field(column, "bytes")
    if not _is_binary(column.type):
        return no_images(len(column))
    return column.cast(pa.binary())


def no_images(rows: int) -> pa.ChunkedArray:
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


def _image_chunks(samples: list[RawSample], chunk_bytes: int = 64 << 20) -> pa.ChunkedArray:
    """The samples' image bytes as Arrow chunks of about `chunk_bytes`, each sample's Python bytes let go
    once copied: the shard's images are in memory once, plus a chunk, not twice."""
    chunks, pending, size = [], [], 0
    for sample in samples:
        pending.append(sample.image)
        size += len(sample.image or b"")
        sample.image = None
        if size >= chunk_bytes:
            chunks.append(pa.array(pending, pa.binary()))
            pending, size = [], 0
    chunks.append(pa.array(pending, pa.binary()))
    return pa.chunked_array(chunks, pa.binary())


def to_table(shard: Shard, samples: list[RawSample], images: pa.ChunkedArray | None = None) -> pa.Table:
    """The raw table of a shard's samples; `images` holds their image bytes (one per sample) where
    they came from a table rather than from the samples themselves."""
    if images is None:
        images = _image_chunks(samples)
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
    table = pa.table({**arrays, "image": images}, schema=RAW_SCHEMA).select(RAW_SCHEMA.names)
    # Where the shard holds each image and how long it is (rows with bytes only): the write phase reads
    # the kept rows' bytes back by position (curation/job.py).
    image_at = [s.image_at if with_image else None for s, with_image in zip(samples, has_image)]
    table = table.append_column(IMAGE_AT, pa.array(image_at, pa.int64()))
    return table.append_column(IMAGE_SIZE, pc.binary_length(images).cast(pa.int64()))
