"""Property: whatever a shard holds, its reader and the CPU stages after it never raise, and every sample
comes out exactly once, kept or rejected with a reason (issue 30).

Hypothesis writes tars (arbitrary member names, types and payloads: image bytes, JSON with lone surrogates
and wrong types, huge names), Parquet files (key, url, caption and image columns of any type, invalid
UTF-8 in string and dictionary columns, Hugging Face image structs, null columns) and CSV URL lists (any
bytes), sometimes gzip'd, cut short or with bytes overwritten, and reads them under a random
input.max_shard_bytes. Examples are few and bounded (a handful of members or rows, small payloads), so
the module runs in seconds (about 15 s on two shared cores).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from curation.errors import UserError
from curation.io.formats.webdataset import _split_member_name
from curation.io.readers import MAX_SHARD_BYTES, clean_name, read_image_column, read_shard
from curation.io.sources import list_shards
from curation.schema import RejectReason
from curation.stages.basic import BasicFilter
from curation.stages.caption import CaptionStage
from curation.stages.decode import DecodeStage

# A deeper search now and then: CURATION_PROPERTY_EXAMPLES=2000 pytest tests/io/test_readers_property.py
PROPERTY = settings(
    max_examples=int(os.environ.get("CURATION_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
REASONS = {reason.value for reason in RejectReason}
DUP = re.compile(r"~dup\d+$")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def tiny(seed: int, size=(40, 36)) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8))


def claiming(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header claims another size than its data holds."""
    data, pos = bytearray(data), 2
    while data[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    data[pos + 5 : pos + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


JPEG = encode(tiny(0), "JPEG")
IMAGES = [
    JPEG,
    encode(tiny(1), "PNG"),
    encode(tiny(2), "JPEG", progressive=True),
    claiming(JPEG, 9000, 9000),
    claiming(JPEG, 60000, 3),
    JPEG[: len(JPEG) // 2],
    JPEG[:-2] + b"\xff\xd9\xff\xd9",
]

# Text with everything: controls, non-ASCII, emoji, and lone surrogates (which no encoder accepts).
CHARS = st.one_of(
    st.characters(max_codepoint=0x2FF),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.characters(),
)
TEXT = st.text(CHARS, max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
JSON_PAYLOADS = st.one_of(
    st.builds(
        lambda url, rest: json.dumps({"url": url, **rest}).encode(),
        JSON_VALUES,
        st.dictionaries(TEXT, JSON_VALUES, max_size=2),
    ),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
    st.just(b"[" * 5000),
)
PAYLOADS = st.one_of(
    st.binary(max_size=64), st.sampled_from(IMAGES), TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))
)
# A lone surrogate outside surrogateescape's range cannot be written to a tar header at all.
UNWRITABLE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def writable(name: str) -> str:
    return UNWRITABLE.sub("?", name)


STEMS = st.one_of(
    TEXT,
    st.sampled_from(["a", "b", "./a", "d/a", "d/e/a", ".hidden", "../up", "/abs", "", "a.b"]),
    st.integers(200, 400).map(lambda n: "L" * n),  # over MAX_NAME_CHARS
    st.binary(max_size=12).map(lambda b: b.decode("utf-8", "surrogateescape")),  # any bytes
)
EXTENSIONS = st.sampled_from(["jpg", "JPG", "png", "webp", "txt", "caption", "json", "cls", "", "jpg.txt", "tar"])
MEMBER_TYPES = st.sampled_from(
    [tarfile.REGTYPE] * 6 + [tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE]
)


@st.composite
def members(draw) -> tuple[str, bytes, bytes]:
    stem, ext = draw(STEMS), draw(EXTENSIONS)
    kind = draw(MEMBER_TYPES)
    payload = draw(JSON_PAYLOADS if ext == "json" else PAYLOADS)
    return writable(f"{stem}.{ext}" if ext else stem), kind, payload


DAMAGE = st.one_of(
    st.just(("none",)),
    st.just(("none",)),
    st.just(("gzip",)),
    st.tuples(st.just("cut"), st.floats(0, 1, exclude_max=True)),
    st.tuples(
        st.just("overwrite"),
        st.lists(
            st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=16)), min_size=1, max_size=4
        ),
    ),
    st.tuples(st.just("append"), st.binary(max_size=600)),
)


def damage(data: bytes, how: tuple) -> bytes:
    """The shard as written, or gzip'd, cut short, overwritten in places, or with garbage after it."""
    if how[0] == "gzip":
        return gzip.compress(data, mtime=0)
    if how[0] == "cut":
        return data[: int(len(data) * how[1])]
    if how[0] == "overwrite" and data:
        data = bytearray(data)
        for at, chunk in how[1]:
            at = int(len(data) * at)
            data[at : at + len(chunk)] = chunk
        return bytes(data)
    if how[0] == "append":
        return data + how[1]
    return data


CAPS = st.sampled_from([MAX_SHARD_BYTES, 1, 700, 3000, 20_000])


def stages():
    return [CaptionStage(), DecodeStage(image_size=16), BasicFilter()]


def check_rows(table: pa.Table, cap: int) -> list[str]:
    """The invariants of any raw or staged table; returns its keys."""
    keys = table.column("key").to_pylist()
    assert len(set(keys)) == len(keys) and all(keys)
    for status, reason, stage in zip(
        *(table.column(c).to_pylist() for c in ("status", "reject_reason", "reject_stage"))
    ):
        assert status in ("kept", "rejected")
        assert (status == "rejected") == (reason is not None) == (stage is not None)
        assert reason is None or reason in REASONS
    assert (pc.sum(pc.binary_length(table.column("image"))).as_py() or 0) <= cap
    for column in ("key", "url", "caption"):
        for value in table.column(column).to_pylist():
            if value is not None:
                value.encode("utf-8")  # valid Unicode: no surrogate got through (this raises on one)
    return keys


def read_and_stage(directory: Path, name: str, data: bytes, cap: int) -> tuple[pa.Table, pa.Table]:
    (directory / name).write_bytes(data)
    [shard] = list_shards(str(directory / name))
    raw = read_shard(shard, max_shard_bytes=cap)
    keys = check_rows(raw, cap)
    table = raw
    for stage in stages():
        table = stage.process_batch(table)
        assert table.column("key").to_pylist() == keys  # nothing lost, duplicated or reordered
        check_rows(table, cap)
    # The write phase reads the same bytes back.
    images = read_image_column(shard, max_shard_bytes=cap)
    scored = set(pc.drop_null(raw.column("image")).to_pylist())
    assert scored <= set(pc.drop_null(images).to_pylist())
    return raw, table


# ---- tars ---------------------------------------------------------------------------------------------


def write_tar(found: list[tuple[str, bytes, bytes]], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tar:
        for name, kind, payload in found:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "target" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            info.size = len(payload) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(payload) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


@PROPERTY
@given(
    found=st.lists(members(), max_size=8),
    fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
    cap=CAPS,
    how=DAMAGE,
)
def test_any_tar_is_read_whole_and_every_sample_comes_out_once(found, fmt, cap, how):
    try:
        written = write_tar(found, fmt)
    except (ValueError, UnicodeError):  # a name tarfile itself cannot write: not an input anyone has
        return
    damaged = damage(written, how)
    with tempfile.TemporaryDirectory() as tmp:
        raw, _ = read_and_stage(Path(tmp), "s.tar", damaged, cap)
    if damaged != written:
        return
    # Intact: one sample per name (and one more per repeated slot), each of them exactly once.
    with tarfile.open(fileobj=io.BytesIO(written)) as tar:
        names = [m.name for m in tar.getmembers() if not m.isdir()]
    stems = {clean_name(_split_member_name(n[2:] if n.startswith("./") else n)[0]) or "?" for n in names}
    keys = [k.split("/", 1)[1] for k in raw.column("key").to_pylist()]
    assert not [k for k in keys if k.startswith(("!damage@", "!unreadable"))], keys  # an intact tar has no damage
    assert {DUP.sub("", k) for k in keys} == stems
    for key, reason in zip(keys, raw.column("reject_reason").to_pylist()):
        assert (DUP.search(key) is None) or reason is not None  # a second sample of a name is rejected


# ---- Parquet ------------------------------------------------------------------------------------------


def texts(values: list[bytes | None], as_type: str) -> pa.Array:
    binary = pa.array(values, pa.binary())
    if as_type == "string":
        return binary.view(pa.string())  # may hold invalid UTF-8, as some writers produce
    if as_type == "large_string":
        return pa.array(values, pa.large_binary()).view(pa.large_string())
    if as_type == "dictionary":
        return binary.view(pa.string()).dictionary_encode()
    return binary


CELL_BYTES = st.one_of(
    st.none(),
    st.binary(max_size=20),
    TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),  # lone surrogates as CESU-8 bytes: invalid UTF-8
    st.just(b"a red square on a blue field"),
)


@st.composite
def text_column(draw, n: int) -> pa.Array:
    kind = draw(st.sampled_from(["string", "large_string", "dictionary", "binary", "int", "float", "list", "null"]))
    if kind == "int":
        return pa.array(
            draw(st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)), pa.int64()
        )
    if kind == "float":
        return pa.array(draw(st.lists(st.none() | st.floats(), min_size=n, max_size=n)), pa.float64())
    if kind == "list":
        words = st.lists(TEXT.map(lambda t: re.sub("[\ud800-\udfff]", "?", t)), max_size=2)
        return pa.array(draw(st.lists(st.none() | words, min_size=n, max_size=n)), pa.list_(pa.string()))
    if kind == "null":
        return pa.nulls(n)
    return texts(draw(st.lists(CELL_BYTES, min_size=n, max_size=n)), kind)


@st.composite
def image_column(draw, n: int) -> pa.Array:
    values = draw(st.lists(st.none() | st.sampled_from(IMAGES) | st.binary(max_size=40), min_size=n, max_size=n))
    kind = draw(st.sampled_from(["binary", "large_binary", "struct", "string", "struct_without_bytes"]))
    if kind == "struct":
        return pa.array(
            [None if v is None else {"bytes": v, "path": "x.jpg"} for v in values],
            pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
        )
    if kind == "struct_without_bytes":
        return pa.array([{"path": "x.jpg"}] * n, pa.struct([("path", pa.string())]))
    if kind == "string":
        return pa.array(["/etc/passwd"] * n, pa.string())
    return pa.array(values, pa.large_binary() if kind == "large_binary" else pa.binary())


@st.composite
def parquet_tables(draw) -> pa.Table:
    n = draw(st.integers(0, 6))
    columns = {}
    for name in draw(st.sets(st.sampled_from(["key", "url", "caption", "txt"]))):
        columns[name] = draw(text_column(n))
    if draw(st.booleans()):
        columns[draw(st.sampled_from(["jpg", "image", "png"]))] = draw(image_column(n))
    if not columns:
        columns["url"] = draw(text_column(n))
    return pa.table(columns)


@PROPERTY
@given(
    table=parquet_tables(),
    row_group_size=st.integers(1, 4),
    store_schema=st.booleans(),
    compression=st.sampled_from(["none", "snappy", "zstd"]),
    cap=CAPS,
    how=DAMAGE,
)
def test_any_parquet_is_read_row_for_row(table, row_group_size, store_schema, compression, cap, how):
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size, store_schema=store_schema, compression=compression)
    written = buf.getvalue()
    damaged = damage(written, how)
    readable = "url" in table.column_names or any(c in table.column_names for c in ("jpg", "image", "png"))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            raw, _ = read_and_stage(Path(tmp), "t.parquet", damaged, cap)
        except UserError as error:  # a readable footer of neither kind: the one job-level refusal
            assert not readable or damaged != written, error
            assert "\n" not in str(error)
            return
    if damaged == written:
        assert raw.num_rows == table.num_rows  # row for row, whatever the cells hold


# ---- CSV / TSV URL lists ------------------------------------------------------------------------------


@PROPERTY
@given(
    header=st.sampled_from([b"url,caption,key\n", b"key,url\n", b"\xef\xbb\xbfurl,caption\r\n", b"url\n"]),
    body=st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.builds(
                lambda a, b: a + b"," + b + b"\n",
                CELL_BYTES.map(lambda v: v or b""),
                CELL_BYTES.map(lambda v: v or b""),
            ),
            st.just(b'"unclosed, quote\n'),
        ),
        max_size=6,
    ),
    cap=CAPS,
)
def test_any_url_list_is_read_without_raising(header, body, cap):
    with tempfile.TemporaryDirectory() as tmp:
        read_and_stage(Path(tmp), "l.csv", header + b"".join(body), cap)
