"""Find the input shards of a job: img2dataset output (webdataset tars or parquet with image bytes)."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

import fsspec
import pyarrow.parquet as pq

from curation.errors import UserError

IMAGE_COLUMNS = ("jpg", "image", "png", "webp", "jpeg")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, kw_only=True)
class Shard:
    """One input shard: the unit of reading, scoring, resuming and output naming."""

    shard_id: str  # stable, file-name safe: derived from the shard's path under the input root
    url: str  # full fsspec URL of the shard file
    format: str  # "webdataset" | "parquet"


def shard_id_for(relative_path: str) -> str:
    stem = relative_path.rsplit(".", 1)[0]
    return _UNSAFE_ID_CHARS.sub("_", stem.replace("/", "__")).strip("_") or "shard"


def list_shards(input_url: str, fmt: str = "auto", storage_options: dict | None = None) -> list[Shard]:
    """List the shards under `input_url` (a directory or a single file), sorted by id."""
    try:
        fs, root = fsspec.core.url_to_fs(input_url, **(storage_options or {}))
    except (ImportError, ValueError) as exc:
        raise UserError(f"cannot open input {input_url}: {exc}") from None
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if not fs.exists(root):
        raise UserError(f"input {input_url} does not exist: check the --input path or URL")
    if fs.isfile(root):
        files, base = [root], posixpath.dirname(root)
    else:
        files, base = fs.find(root), root
    tars = sorted(p for p in files if p.endswith(".tar"))
    parquets = sorted(p for p in files if p.endswith(".parquet"))
    tar_stems = {p[: -len(".tar")] for p in tars}

    def full_url(path: str) -> str:
        return path if protocol in ("file", "local") else f"{protocol}://{path}"

    def relative(path: str) -> str:
        return posixpath.relpath(path, base) if base else path

    shards: list[Shard] = []
    if fmt in ("auto", "webdataset"):
        shards += [Shard(shard_id=shard_id_for(relative(p)), url=full_url(p), format="webdataset") for p in tars]
    if fmt in ("auto", "parquet"):
        # In img2dataset's webdataset layout, NNNNN.parquet beside NNNNN.tar holds only metadata.
        for p in parquets:
            if p[: -len(".parquet")] in tar_stems:
                continue
            _check_parquet_has_images(fs, p, input_url)
            shards.append(Shard(shard_id=shard_id_for(relative(p)), url=full_url(p), format="parquet"))
    if not shards:
        raise UserError(
            f"no input shards (*.tar or *.parquet with an image column) found under {input_url}: "
            "point --input at img2dataset output"
        )
    ids = [s.shard_id for s in shards]
    if len(set(ids)) != len(ids):
        raise UserError(f"input {input_url} holds two shards with the same name: keep one of each")
    return sorted(shards, key=lambda s: s.shard_id)


def _check_parquet_has_images(fs, path: str, input_url: str) -> None:
    try:
        with fs.open(path, "rb") as f:
            names = pq.read_schema(f).names
    except Exception as exc:  # noqa: BLE001 - any unreadable footer is the same user problem
        raise UserError(f"input file {path} is not readable Parquet ({type(exc).__name__}): fix or remove it") from None
    if not any(c in names for c in IMAGE_COLUMNS):
        raise UserError(
            f"input file {path} has no image column ({', '.join(IMAGE_COLUMNS)}): "
            "give img2dataset output with images (a URL list must be downloaded first)"
        )
