"""Find the input shards of a job: img2dataset output (webdataset tars, Parquet with image bytes) or
URL lists (Parquet with a `url` column and no image column, CSV/TSV with a `url` header).

Files and folders whose name starts with `.` or `_` are not inputs (temporary files, `_SUCCESS`, a
`_work` dir), as in pyarrow datasets. A file whose format cannot be told (a Parquet file with a garbage
footer, an empty CSV) is still a shard: its reader turns it into one rejected `unreadable_shard` row, so
one damaged file among thousands does not stop a job. A readable file of the wrong shape (Parquet or CSV
with neither image nor url column) is a job-level `UserError`: that is a wrong --input, not damage.
"""

from __future__ import annotations

import csv
import io
import posixpath
import re
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import UserError

IMAGE_COLUMNS = ("jpg", "image", "png", "webp", "jpeg")
URL_COLUMN = "url"
URL_LIST_SUFFIXES = (".csv", ".tsv")
FORMATS = ("webdataset", "parquet", "urls")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_HEADER_BYTES = 64 << 10  # enough for any CSV header line we accept


@dataclass(frozen=True, kw_only=True)
class Shard:
    """One input shard: the unit of reading, scoring, resuming and output naming."""

    shard_id: str  # stable, file-name safe: derived from the shard's path under the input root
    url: str  # full fsspec URL of the shard file
    format: str  # "webdataset" | "parquet" (image bytes) | "urls" (a URL list to download)


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


def list_shards(input_url: str, fmt: str = "auto", storage_options: dict | None = None) -> list[Shard]:
    """List the shards under `input_url` (a directory or a single file), sorted by id."""
    try:
        fs, root = fsspec.core.url_to_fs(input_url, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise UserError(f"cannot open input {input_url}: {exc}") from None
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    try:
        if not fs.exists(root):
            raise UserError(f"input {input_url} does not exist: check the --input path or URL")
        if fs.isfile(root):
            files, base = [root], posixpath.dirname(root)
        else:
            files, base = fs.find(root), root
    except PermissionError:
        raise UserError(access_denied(input_url, protocol)) from None
    files = [p for p in files if not _is_hidden(posixpath.relpath(p, base) if base else p)]

    def full_url(path: str) -> str:  # an http(s) path is a whole URL already
        return path if protocol in ("file", "local") else fs.unstrip_protocol(path)

    def relative(path: str) -> str:
        return posixpath.relpath(path, base) if base else path

    tars = sorted(p for p in files if p.endswith(".tar"))
    parquets = sorted(p for p in files if p.endswith(".parquet"))
    tables = sorted(p for p in files if p.endswith(URL_LIST_SUFFIXES))
    tar_stems = {p[: -len(".tar")] for p in tars}

    found: list[tuple[str, str]] = []  # (path, format)
    if fmt in ("auto", "webdataset"):
        found += [(p, "webdataset") for p in tars]
    if fmt in ("auto", "parquet", "urls"):
        # In img2dataset's webdataset layout, NNNNN.parquet beside NNNNN.tar holds only metadata.
        for p in parquets:
            if p[: -len(".parquet")] in tar_stems:
                continue
            kind = _parquet_kind(fs, p)
            if fmt not in ("auto", kind) and kind != "unknown":
                other = "URL list" if kind == "urls" else "Parquet with image bytes"
                raise UserError(f"input file {p} is a {other}, not input.format={fmt}: set input.format to auto")
            found.append((p, "parquet" if kind == "unknown" else kind))
    if fmt in ("auto", "urls"):
        for p in tables:
            _check_url_list_header(fs, p)
            found.append((p, "urls"))

    shards = [Shard(shard_id=shard_id_for(relative(p)), url=full_url(p), format=f) for p, f in found]
    if not shards:
        raise UserError(
            f"no input shards (*.tar, *.parquet with an image or url column, *.csv/*.tsv URL lists) found under "
            f"{input_url}: point --input at img2dataset output or a URL list"
        )
    ids = [s.shard_id for s in shards]
    if len(set(ids)) != len(ids):
        raise UserError(f"input {input_url} holds two shards with the same name: keep one of each")
    return sorted(shards, key=lambda s: s.shard_id)


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


def _parquet_kind(fs, path: str) -> str:
    """The kind of a Parquet file from its footer; "unknown" when the footer cannot be read. Only a
    hint: the reader reads the whole file and decides from its content (a garbage footer becomes an
    unreadable_shard row there, a transient read error raises there and is retried)."""
    with fs.open(path, "rb") as f:
        try:
            schema = pq.read_schema(f)
        except Exception:  # noqa: BLE001 - pyarrow reports a garbage footer as OSError too
            return "unknown"
    return parquet_kind(schema, path)


def url_list_delimiter(path: str) -> str:
    return "\t" if path.endswith(".tsv") else ","


def header_columns(head: bytes, delimiter: str) -> list[str]:
    """The column names in the first line of a CSV/TSV (an empty list for an empty file)."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace").lstrip("\ufeff")
    return next(csv.reader(io.StringIO(line), delimiter=delimiter), [])


def _check_url_list_header(fs, path: str) -> None:
    with fs.open(path, "rb") as f:
        head = f.read(_HEADER_BYTES)
    columns = header_columns(head, url_list_delimiter(path))
    if columns and URL_COLUMN not in columns:  # an empty file is damage, reported by the reader
        shown = ", ".join(c[:40] for c in columns[:8])
        raise UserError(f"URL list {path} has no '{URL_COLUMN}' column in its header ({shown}): add a url header")
