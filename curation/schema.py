"""The one record schema of the pipeline, and the reasons a row can be rejected.

Every stage reads and writes Arrow batches with (a subset of) these columns. Columns a stage has not
filled yet are null. `status` and `reject_reason` are on every row: rejected rows are data, never dropped.
"""

from __future__ import annotations

import re
from enum import Enum

import pyarrow as pa

# The version of the record schema and of what a scored shard holds. A work dir records it: a resume with
# another version is refused (or rescored with --rescore). Bump it when a stored column changes meaning.
SCHEMA_VERSION = 2


class Status(str, Enum):
    KEPT = "kept"
    REJECTED = "rejected"


class Stage(str, Enum):
    """The stage that rejected a row (`reject_stage`)."""

    READ = "read"
    DOWNLOAD = "download"
    CAPTION = "caption"  # caption hygiene and PII in captions
    LANGUAGE = "language"
    DECODE = "decode"
    BASIC = "basic"
    EMBED = "embed"
    CLIP = "clip"
    HEADS = "heads"
    PRIVACY = "privacy"  # faces in kept images
    DEDUP = "dedup"
    IMAGE_FILTER = "image_filter"


# A reject reason is an identifier: stages, heads and phases declare the ones they write (BatchStage.
# reject_reasons, plan.StagePlan.reject_reasons collects them); the enum below names the built-in ones.
REASON_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")


def reason_name(reason: "RejectReason | str") -> str:
    """The reason as stored in `reject_reason`, checked to be an identifier."""
    name = reason.value if isinstance(reason, Enum) else str(reason)
    if not REASON_PATTERN.fullmatch(name):
        raise ValueError(f"reject reason {name!r} is not an identifier (lower case letters, digits, _)")
    return name


class RejectReason(str, Enum):
    # read: the record itself is incomplete
    MISSING_IMAGE = "missing_image"
    MISSING_CAPTION = "missing_caption"
    CAPTION_TOO_LONG = "caption_too_long"  # longer than readers.MAX_CAPTION_CHARS
    DUPLICATE_KEY = "duplicate_key"  # a later sample with a key already seen in the shard
    MALFORMED_ROW = "malformed_row"  # a CSV/TSV line with the wrong number of fields
    # read: the shard itself is damaged or hostile (never extracted; see io/readers.py)
    UNSAFE_MEMBER_PATH = "unsafe_member_path"  # tar member with an absolute path or `..`
    UNSUPPORTED_TAR_MEMBER = "unsupported_tar_member"  # symlink, hardlink, device, fifo, sparse
    BROKEN_TAR_MEMBER = "broken_tar_member"  # cut or damaged member/header; samples before it are read
    BROKEN_ROW_GROUP = "broken_row_group"  # an undecodable Parquet row group; the others are read
    UNREADABLE_SHARD = "unreadable_shard"  # not a tar / Parquet / CSV at all: one row stands for it
    SHARD_TOO_LARGE = "shard_too_large"  # the shard's bytes passed input.max_shard_bytes: this row's were not read
    # read or download: larger than the configured limit
    TOO_LARGE = "too_large"
    # download: URL lists
    INVALID_URL = "invalid_url"  # missing, unparsable, or not http(s): file:// is never fetched
    BLOCKED_ADDRESS = "blocked_address"  # resolves to a private/loopback/link-local address
    HTTP_3XX = "http_3xx"  # a redirect without a usable Location
    TOO_MANY_REDIRECTS = "too_many_redirects"
    HTTP_404 = "http_404"
    HTTP_429 = "http_429"  # still throttled after the retries
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    OPTED_OUT = "opted_out"  # X-Robots-Tag: noai / noimageai / noindex / noimageindex
    # caption: hygiene and personal data
    BOILERPLATE_CAPTION = "boilerplate_caption"  # a file name, "image", "click here", "IMG_1234", ...
    CAPTION_PII = "caption_pii"  # personal data in the caption, with caption.pii: reject
    # language: caption language not in language.keep
    UNWANTED_LANGUAGE = "unwanted_language"
    # decode: the image bytes
    EMPTY_IMAGE = "empty_image"
    NOT_AN_IMAGE = "not_an_image"
    TRUNCATED_IMAGE = "truncated_image"
    DECOMPRESSION_BOMB = "decompression_bomb"
    UNDECODABLE_IMAGE = "undecodable_image"
    # basic: DataComp-style rules
    CAPTION_TOO_SHORT = "caption_too_short"
    CAPTION_TOO_FEW_WORDS = "caption_too_few_words"
    IMAGE_TOO_SMALL = "image_too_small"
    EXTREME_ASPECT_RATIO = "extreme_aspect_ratio"
    IMAGE_TOO_FEW_BYTES = "image_too_few_bytes"  # LAION: image files under 5 KB
    # clip: image-text alignment
    LOW_CLIP_SCORE = "low_clip_score"
    # heads: classifier heads on the embedding pass
    UNSAFE = "unsafe"
    WATERMARK = "watermark"
    LOW_AESTHETIC = "low_aesthetic"
    # privacy: faces in a kept image, with privacy.faces: reject
    FACES = "faces"
    # dedup
    EXACT_DUPLICATE = "exact_duplicate"
    NEAR_DUPLICATE = "near_duplicate"
    SEMANTIC_DUPLICATE = "semantic_duplicate"
    DUPLICATE_OF_PREVIOUS_REFRESH = "duplicate_of_previous_refresh"
    EVAL_CONTAMINATION = "eval_contamination"
    # image_filter: DataComp's image-based filter (in the dedup phase)
    OUTSIDE_REFERENCE_CLUSTERS = "outside_reference_clusters"


class DupKind(str, Enum):
    EXACT = "exact"
    NEAR = "near"
    SEMANTIC = "semantic"
    PREVIOUS_REFRESH = "previous_refresh"
    EVAL = "eval"


def embedding_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float16(), dim)


# The head columns of a config with the default heads (config.DEFAULT_HEADS), in their schema order.
DEFAULT_HEAD_COLUMNS = ("unsafe", "watermark", "aesthetic")


def record_schema(embed_dim: int, heads: tuple[str, ...] = DEFAULT_HEAD_COLUMNS) -> pa.Schema:
    """The full record schema; `embed_dim` is the model's embedding width, `heads` the score columns of the
    job's heads (one float32 column each, after clip_score, in the config's order)."""
    emb = embedding_type(embed_dim)
    fields = []
    for field in _CORE_FIELDS:
        fields.append(field.with_type(emb) if field.name in ("img_emb", "txt_emb") else field)
        if field.name == "clip_score":
            fields += [pa.field(name, pa.float32()) for name in heads]
    return pa.schema(fields)


_CORE_FIELDS = [
    pa.field("key", pa.string(), nullable=False),
    pa.field("source", pa.string()),
    pa.field("url", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("image", pa.binary()),  # kept/ and rejected/ store it as HF's {bytes, path} (io/huggingface.py)
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("sha256", pa.string()),
    pa.field("phash", pa.uint64()),
    pa.field("img_emb", embedding_type(1)),  # the model's width: record_schema sets it
    pa.field("txt_emb", embedding_type(1)),
    pa.field("clip_score", pa.float32()),
    pa.field("lang", pa.string()),
    pa.field("lang_score", pa.float32()),
    pa.field("pii", pa.list_(pa.string())),  # kinds of personal data redacted from the caption
    pa.field("faces", pa.int16()),  # faces found in the image (null: not looked for)
    pa.field("dup_of", pa.string()),
    pa.field("dup_kind", pa.string()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("reject_reason", pa.string()),
    pa.field("reject_stage", pa.string()),
]


def core_columns() -> frozenset[str]:
    """The record columns that are not head scores: a head may not be named after one."""
    return frozenset(f.name for f in _CORE_FIELDS) | WORKING_COLUMNS


# Columns that live only while a shard is scored and are never stored: the decoded pixels the
# embedding reads, and bookkeeping columns, whose names start with "_".
WORKING_COLUMNS = frozenset({"pixels"})

# Bookkeeping columns a scored shard stores beside the record schema (conform leaves them out; the commit
# appends them, the write phase drops them: never in kept/ or rejected/). They tell where the input shard
# holds each row's image bytes, so the write phase reads the bytes it writes by position, unhashed:
IMAGE_AT = "_image_at"  # the image's position as its input format reads it back: a tar member's data
#                         offset, a table's row index (io/formats/*.read_images_at); null: no bytes there
IMAGE_SIZE = "_image_size"  # the image's length in bytes, checked when it is read back
SOURCE_VERSION = "_source_version"  # the input file's size and mtime/ETag when it was read (readers.source_version)
SOURCE_COLUMNS = (IMAGE_AT, IMAGE_SIZE, SOURCE_VERSION)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Return `table` with exactly `schema`'s columns, in order; missing columns are all-null.

    A column that is neither in the schema nor a working column is an error, not silently dropped: a
    stage that adds a column must add it to the record schema too."""
    unknown = [
        name
        for name in table.column_names
        if name not in schema.names and name not in WORKING_COLUMNS and not name.startswith("_")
    ]
    if unknown:
        raise ValueError(f"columns {unknown} are not in the record schema: add them to record_schema()")
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)
