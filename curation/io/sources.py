"""Find the input shards of a job: img2dataset output (webdataset tars, Parquet with image bytes) or
URL lists (Parquet with a `url` column and no image column, CSV/TSV with a `url` header).

Files and folders whose name starts with `.` or `_` are not inputs (temporary files, `_SUCCESS`, a
`_work` dir), as in pyarrow datasets. A file whose format cannot be told (a Parquet file with a garbage
footer, an empty CSV) is still a shard: its reader turns it into one rejected `unreadable_shard` row, so
one damaged file among thousands does not stop a job. A readable file of the wrong shape (Parquet or CSV
with neither image nor url column) is a job-level `UserError`: that is a wrong --input, not damage.

Each of these is a one-line `UserError` naming the files, raised before anything is read or written:
- A shard-named path that is not a regular file (a FIFO, a device, a socket, or a symbolic link to one
  or to nothing): a FIFO blocks forever and /dev/zero never ends. Links to regular files are followed.
- A layout whose meaning cannot be told. In img2dataset's webdataset output NNNNN.parquet beside
  NNNNN.tar is the tar's metadata and is skipped; but a Parquet with image bytes beside a same-named tar
  (which of the two is the shard?), and, with input.format auto, an img2dataset metadata Parquet whose tar
  is missing (its `status`/`error_message` columns or its NNNNN_stats.json give it away: reading it as a
  URL list would download the shard again) are refused. Set input.format=urls to download such a file.
- Two files that would make shards of the same id (a.csv and a.tsv, d/x.tar and d__x.tar).

Listing costs a constant number of requests plus reads done side by side, never one request per shard
after another: the input is listed once (fs.find with detail: sizes come with the names); the footers
of Parquet files, the header lines of CSV/TSV lists and state.json files are read together with
`fs.cat_ranges` (concurrent requests on an object store), a Parquet footer as the file's last 64 KiB.
Tars need no read at all. Of the metadata Parquet files beside tars only the first one's footer is read,
and any one at least a quarter of its tar's size (image bytes would make it about as large as the tar).
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import UserError

IMAGE_COLUMNS = ("jpg", "image", "png", "webp", "jpeg")
URL_COLUMN = "url"
URL_LIST_SUFFIXES = (".csv", ".tsv")
SHARD_SUFFIXES = (".tar", ".parquet", ".arrow", *URL_LIST_SUFFIXES)
# Columns img2dataset writes to the metadata Parquet beside each tar (and never to a URL list it reads).
METADATA_COLUMNS = ("status", "error_message")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
HEADER_BYTES = 64 << 10  # enough for any CSV header line we accept
FOOTER_BYTES = 64 << 10  # a Parquet file's last bytes read for its schema (pyarrow's own first read)
_FOOTER_POOL = 16  # footers longer than FOOTER_BYTES, read again whole side by side


@dataclass(frozen=True, kw_only=True)
class Shard:
    """One input shard: the unit of reading, scoring, resuming and output naming."""

    shard_id: str  # stable, file-name safe: derived from the shard's path under the input root
    url: str  # full fsspec URL of the shard file
    format: str  # the input format that reads it (curation/io/formats/): webdataset, parquet, urls, ...


def shard_id_for(relative_path: str) -> str:
    stem = relative_path.rsplit(".", 1)[0]
    return _UNSAFE_ID_CHARS.sub("_", stem.replace("/", "__")).strip("_") or "shard"


def credential_source(protocol: str) -> str:
    """Where the credentials in use come from (never the credentials themselves)."""
    if protocol in ("s3", "s3a"):
        try:
            import botocore.session

            credentials = botocore.session.Session().get_credentials()
        except Exception:  # noqa: BLE001 - a broken AWS config is itself the answer
            return "AWS configuration (unreadable)"
        if credentials is None:
            return "none found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role)"
        return f"AWS credentials from {credentials.method}"
    if protocol in ("gs", "gcs"):
        return "Google credentials (GOOGLE_APPLICATION_CREDENTIALS or the metadata server)"
    return "this machine's user and file permissions"


def access_denied(url: str, protocol: str) -> str:
    return (
        f"access denied to {url} with {credential_source(protocol)}: grant read/write access or use other credentials"
    )


@dataclass(frozen=True, kw_only=True)
class Listing:
    """The files under an input, as each input format's `detect` sees them (curation/io/formats/)."""

    fs: fsspec.AbstractFileSystem
    files: tuple[str, ...]  # sorted, hidden ones left out
    fmt: str  # input.format: "auto" or a format's name
    sizes: dict = field(default_factory=dict)  # path -> size in bytes (None: not known), for every file
    schemas: dict = field(default_factory=dict)  # path -> the Parquet schema from its footer (None: unreadable)

    def with_suffix(self, *suffixes: str) -> list[str]:
        return [p for p in self.files if p.endswith(suffixes)]

    def has(self, path: str) -> bool:
        return path in self.sizes

    def schema(self, path: str) -> pa.Schema | None:
        """The schema of a Parquet file; None for an unreadable footer, and for a metadata Parquet beside
        a tar whose footer was not read (see the module doc)."""
        return self.schemas.get(path)

    def beside_tar(self, path: str) -> bool:
        """Whether `path` (NNNNN.parquet) has a NNNNN.tar beside it: img2dataset's metadata of that tar."""
        return self.has(f"{path.rsplit('.', 1)[0]}.tar")

    def heads(self, paths: list[str], limit: int | None = None) -> list[bytes]:
        """The first `limit` bytes (None: all) of each file, read side by side."""

        def end(path: str) -> int | None:
            size = self.sizes.get(path)
            if limit is None or size is None:
                return size if limit is None else limit
            return min(limit, size)

        heads = read_ranges(self.fs, paths, [0] * len(paths), [end(p) for p in paths])
        return heads if limit is None else [head[:limit] for head in heads]  # a server may ignore the range


def list_shards(input_url: str, fmt: str = "auto", storage_options: dict | None = None) -> list[Shard]:
    """List the shards under `input_url` (a directory or a single file), sorted by id: each input format
    (curation/io/formats/) claims its files."""
    from curation.io.formats import FORMATS

    try:
        fs, root = fsspec.core.url_to_fs(input_url, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise UserError(f"cannot open input {input_url}: {exc}") from None
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    try:
        found_files, base = _list(fs, root)
    except FileNotFoundError:
        raise UserError(f"input {input_url} does not exist: check the --input path or URL") from None
    except PermissionError:
        raise UserError(access_denied(input_url, protocol)) from None
    sizes = {p: size for p, size in found_files.items() if not _is_hidden(posixpath.relpath(p, base) if base else p)}
    files = sorted(sizes)
    if protocol in ("file", "local"):
        _check_regular([p for p in files if p.endswith(SHARD_SUFFIXES)])

    def full_url(path: str) -> str:  # an http(s) path is a whole URL already
        return path if protocol in ("file", "local") else fs.unstrip_protocol(path)

    def relative(path: str) -> str:
        return posixpath.relpath(path, base) if base else path

    schemas = parquet_schemas(fs, _footers_to_read(files, sizes, fmt), sizes)
    listing = Listing(fs=fs, files=tuple(files), fmt=fmt, sizes=sizes, schemas=schemas)
    found = [(p, name) for name, input_format in FORMATS.items() for p in input_format.detect(listing)]
    shards = [Shard(shard_id=shard_id_for(relative(p)), url=full_url(p), format=f) for p, f in found]
    if not shards:
        raise UserError(
            f"no input shards (*.tar, *.parquet with an image or url column, *.csv/*.tsv URL lists, Hugging Face "
            f"datasets saved to disk) found under {input_url}: point --input at img2dataset output or a URL list"
        )
    by_id: dict[str, list[str]] = {}
    for (p, _), shard in zip(found, shards):
        by_id.setdefault(shard.shard_id, []).append(relative(p))
    for shard_id, paths in sorted(by_id.items()):
        if len(paths) > 1:
            raise UserError(
                f"input {input_url} holds {' and '.join(sorted(paths))}, which both make shard {shard_id}: "
                "rename or move one of them"
            )
    return sorted(shards, key=lambda s: s.shard_id)


def _list(fs, root: str) -> tuple[dict[str, int | None], str]:
    """Every file under `root` with its size, and the folder paths are relative to: one info request and
    one listing (an object store pages it, a thousand names a page)."""
    info = fs.info(root)
    if info.get("type") != "directory":
        return {root: info.get("size")}, posixpath.dirname(root)
    found = fs.find(root, detail=True)
    return {path: entry.get("size") for path, entry in found.items() if entry.get("type") != "directory"}, root


def _footers_to_read(files: list[str], sizes: dict, fmt: str) -> list[str]:
    """The Parquet files whose footer detection needs (see the module doc)."""
    if fmt == "hf_datasets":
        return []
    wanted, first_beside_tar = [], True
    for path in files:
        if not path.endswith(".parquet"):
            continue
        tar = f"{path[: -len('.parquet')]}.tar"
        if tar not in sizes:
            if fmt != "webdataset":
                wanted.append(path)
            continue
        size, tar_size = sizes[path], sizes[tar]
        if first_beside_tar or size is None or tar_size is None or 4 * size >= tar_size:
            wanted.append(path)
        first_beside_tar = False
    return wanted


def read_ranges(fs, paths: list[str], starts: list[int], ends: list[int | None]) -> list[bytes]:
    """Byte ranges of many files with one call (fsspec's cat_ranges: concurrent requests on an object
    store); the first error raises."""
    wanted = [i for i, (start, end) in enumerate(zip(starts, ends)) if end is None or end > start]
    found = [b""] * len(paths)
    if wanted:
        pick = [[column[i] for i in wanted] for column in (paths, starts, ends)]
        for i, result in zip(wanted, fs.cat_ranges(*pick, on_error="return")):
            if isinstance(result, BaseException):
                raise result
            found[i] = result
    return found


def not_regular(mode: int) -> str:
    """What a file that is not a regular file is, from its st_mode (followed through links)."""
    for test, what in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def _check_regular(paths: list[str]) -> None:
    """Local shard files must be regular files (links to them are followed): see the module doc."""
    for path in paths:
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise UserError(
                f"input file {path} is a symbolic link to nothing: remove it or restore its target"
            ) from None
        if not stat.S_ISREG(mode):
            raise UserError(
                f"input file {path} is {not_regular(mode)}: inputs are read from regular files only, remove it"
            )


def is_metadata(schema: pa.Schema, stem: str, listing: Listing) -> bool:
    """Whether a URL-list Parquet is img2dataset's metadata of a webdataset shard (see the module doc)."""
    return all(c in schema.names for c in METADATA_COLUMNS) or listing.has(f"{stem}_stats.json")


def _is_hidden(relative_path: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative_path.split("/") if part not in ("", "."))


def image_column(names: list[str]) -> str | None:
    return next((c for c in IMAGE_COLUMNS if c in names), None)


def parquet_kind(schema: pa.Schema, path: str) -> str:
    """ "parquet" (image bytes) or "urls" (a URL list); a UserError for any other shape."""
    if image_column(schema.names):
        return "parquet"
    if URL_COLUMN in schema.names:
        return "urls"
    raise UserError(
        f"input file {path} has neither an image column ({', '.join(IMAGE_COLUMNS)}) nor a url column: "
        "give img2dataset output or a URL list"
    )


def parquet_schemas(fs, paths: list[str], sizes: dict) -> dict[str, pa.Schema | None]:
    """The schema of each Parquet file from its footer, None when it cannot be read: the last FOOTER_BYTES
    of every file with one `read_ranges`, then the rare footer longer than that whole, side by side.
    Only a hint: the reader reads the whole file and decides from its content (a garbage footer becomes
    an unreadable_shard row there, a transient read error raises there and is retried)."""
    known = [p for p in paths if sizes.get(p) is not None]
    tails = read_ranges(fs, known, [max(0, sizes[p] - FOOTER_BYTES) for p in known], [sizes[p] for p in known])
    schemas, longer = {}, [p for p in paths if sizes.get(p) is None]
    for path, tail in zip(known, tails):
        whole = len(tail) >= sizes[path]
        if not whole and tail[-4:] == b"PAR1" and int.from_bytes(tail[-8:-4], "little") + 8 > len(tail):
            longer.append(path)
        else:
            schemas[path] = _schema_in(tail)

    def read_whole(path: str) -> pa.Schema | None:
        with fs.open(path, "rb") as f:
            try:
                return pq.read_schema(f)
            except Exception:  # noqa: BLE001 - pyarrow reports a garbage footer as OSError too
                return None

    if longer:
        with ThreadPoolExecutor(min(_FOOTER_POOL, len(longer))) as pool:
            schemas.update(zip(longer, pool.map(read_whole, longer)))
    return schemas


def _schema_in(tail: bytes) -> pa.Schema | None:
    """The schema in a Parquet file's last bytes (the footer is found from the end: offsets do not matter)."""
    try:
        return pq.read_schema(pa.BufferReader(tail))
    except Exception:  # noqa: BLE001 - pyarrow reports a garbage footer as OSError too
        return None


def url_list_delimiter(path: str) -> str:
    return "\t" if path.endswith(".tsv") else ","


def header_columns(head: bytes, delimiter: str) -> list[str]:
    """The column names in the first line of a CSV/TSV (an empty list for an empty file)."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace").lstrip("\ufeff")
    return next(csv.reader(io.StringIO(line), delimiter=delimiter), [])


def check_url_list_header(path: str, head: bytes) -> None:
    """`head`: the first HEADER_BYTES of the URL list at `path`."""
    columns = header_columns(head, url_list_delimiter(path))
    if columns and URL_COLUMN not in columns:  # an empty file is damage, reported by the reader
        shown = ", ".join(c[:40] for c in columns[:8])
        raise UserError(f"URL list {path} has no '{URL_COLUMN}' column in its header ({shown}): add a url header")
