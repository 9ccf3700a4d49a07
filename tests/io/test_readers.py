"""Shard listing and reading: formats, keys, captions, damage. The hostile corpus is in test_hostile_inputs."""

from __future__ import annotations

import io
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.errors import UserError
from curation.io.formats import webdataset
from curation.io.readers import (
    MAX_CAPTION_CHARS,
    clean_caption,
    clean_name,
    read_shard,
    unique_key,
    url_name,
)
from curation.io.sources import Shard, list_shards
from curation.schema import RejectReason


def rows(table: pa.Table) -> dict[str, tuple]:
    return {
        k: (s, r, c, u)
        for k, s, r, c, u in zip(
            *(table.column(n).to_pylist() for n in ("key", "status", "reject_reason", "caption", "url"))
        )
    }


def write_tar(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# ---- listing ----------------------------------------------------------------------------------------


def test_lists_every_format_and_skips_hidden_files(tmp_path):
    write_tar(tmp_path / "00000.tar", [("a.jpg", b"x"), ("a.txt", b"cap")])
    pq.write_table(pa.table({"url": ["u"], "caption": ["c"]}), tmp_path / "00000.parquet")  # tar metadata
    pq.write_table(pa.table({"jpg": [b"x"], "caption": ["c"]}), tmp_path / "bytes.parquet")
    pq.write_table(pa.table({"url": ["http://x/a.jpg"], "caption": ["c"]}), tmp_path / "links.parquet")
    (tmp_path / "list.csv").write_text("url,caption\nhttp://x/b.jpg,c\n")
    (tmp_path / "list2.tsv").write_text("url\tcaption\nhttp://x/c.jpg\tc\n")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".tmp-abc-x.parquet").write_bytes(b"partial")
    (tmp_path / "_work").mkdir()
    pq.write_table(pa.table({"key": ["k"]}), tmp_path / "_work" / "scored.parquet")
    shards = list_shards(str(tmp_path))
    assert [(s.shard_id, s.format) for s in shards] == [
        ("00000", "webdataset"),
        ("bytes", "parquet"),
        ("links", "urls"),
        ("list", "urls"),
        ("list2", "urls"),
    ]
    with pytest.raises(UserError, match="bytes.parquet is a Parquet with image bytes, not input.format=urls"):
        list_shards(str(tmp_path), "urls")  # an explicit format never skips a file silently
    assert [s.shard_id for s in list_shards(str(tmp_path), "webdataset")] == ["00000"]


def test_format_mismatch_and_wrong_schema_are_one_line_user_errors(tmp_path):
    pq.write_table(pa.table({"url": ["http://x/a.jpg"]}), tmp_path / "links.parquet")
    with pytest.raises(UserError, match="links.parquet is a URL list, not input.format=parquet"):
        list_shards(str(tmp_path), "parquet")
    pq.write_table(pa.table({"caption": ["c"], "width": [3]}), tmp_path / "meta.parquet")
    with pytest.raises(UserError, match="meta.parquet has neither an image column") as err:
        list_shards(str(tmp_path))
    assert "\n" not in str(err.value)
    (tmp_path / "meta.parquet").unlink()
    (tmp_path / "bad.csv").write_text("link,caption\nhttp://x,c\n")
    with pytest.raises(UserError, match="bad.csv has no 'url' column"):
        list_shards(str(tmp_path))


def test_a_missing_file_is_an_io_error_not_a_rejected_row(tmp_path):
    for fmt, name in [("webdataset", "gone.tar"), ("parquet", "gone.parquet"), ("urls", "gone.csv")]:
        with pytest.raises(FileNotFoundError):
            read_shard(Shard(shard_id="gone", url=str(tmp_path / name), format=fmt))


# ---- URL lists --------------------------------------------------------------------------------------


def test_url_list_keys_come_from_the_key_column_else_the_url_never_the_position(tmp_path):
    (tmp_path / "a.csv").write_text(
        "url,caption,key\n"
        "http://h/1.jpg,one two three,000010001\n"  # digits stay a string: leading zeros kept
        "http://h/2.jpg,one two three,\n"  # no key: hash of the url
        ",one two three,\n"  # neither: row index
    )
    table = read_shard(list_shards(str(tmp_path))[0])
    assert table.column("key").to_pylist() == ["a/000010001", f"a/{url_name('http://h/2.jpg')}", "a/row000000002"]
    assert table.column("status").to_pylist() == ["kept"] * 3  # the download stage judges the URL
    assert table.column("image").null_count == 3

    # The same rows in another order keep their keys.
    pq.write_table(
        pa.table({"url": ["http://h/2.jpg", "http://h/1.jpg"], "caption": ["c d e", "c d e"]}), tmp_path / "b.parquet"
    )
    keys = read_shard(Shard(shard_id="b", url=str(tmp_path / "b.parquet"), format="urls")).column("key").to_pylist()
    assert keys == [f"b/{url_name('http://h/2.jpg')}", f"b/{url_name('http://h/1.jpg')}"]


def test_url_list_rows_without_caption_are_rejected_before_any_download(tmp_path):
    pq.write_table(
        pa.table({"url": ["http://h/1.jpg", "http://h/2.jpg"], "caption": ["a b c", None]}), tmp_path / "l.parquet"
    )
    got = rows(read_shard(list_shards(str(tmp_path))[0]))
    assert [v[:2] for v in got.values()] == [("kept", None), ("rejected", "missing_caption")]


def test_repeated_urls_become_duplicate_keys(tmp_path):
    (tmp_path / "l.tsv").write_text("url\tcaption\nhttp://h/1.jpg\ta b c\nhttp://h/1.jpg\td e f\n")
    got = rows(read_shard(list_shards(str(tmp_path))[0]))
    first = f"l/{url_name('http://h/1.jpg')}"
    assert got[first][:2] == ("kept", None)
    assert got[f"{first}~dup1"][:2] == ("rejected", "duplicate_key")


def test_csv_quoting_non_utf8_and_malformed_lines(tmp_path):
    data = (
        b"url,caption\n"
        b'http://h/1.jpg,"a caption, with a comma\nand a newline"\n'
        b"http://h/2.jpg,caf\xe9 au lait here\n"
        b"http://h/3.jpg,too,many,fields\n"
    )
    (tmp_path / "l.csv").write_bytes(data)
    got = rows(read_shard(list_shards(str(tmp_path))[0]))
    assert len(got) == 3
    values = list(got.values())
    assert values[0][2] == "a caption, with a comma\nand a newline"
    assert values[1][2] == "caf\ufffd au lait here"
    assert got["l/!record-4"][:2] == ("rejected", "malformed_row")  # the 4th record, header included


def test_empty_csv_is_one_unreadable_row_and_header_only_is_empty(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "header.csv").write_text("url,caption\n")
    by_id = {s.shard_id: read_shard(s) for s in list_shards(str(tmp_path))}
    assert rows(by_id["empty"]) == {"empty/!unreadable": ("rejected", "unreadable_shard", None, None)}
    assert by_id["header"].num_rows == 0


# ---- Parquet with bytes -----------------------------------------------------------------------------


def test_parquet_keys_captions_and_hugging_face_image_structs(tmp_path):
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array([{"bytes": b"i1", "path": "a.jpg"}, {"bytes": None, "path": "b.jpg"}, None], image_type),
            "caption": pa.array([b"bytes caption \x00here", b"x", b"y"], pa.binary()),
            "key": pa.array([7, 8, 7], pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "hf.parquet")
    got = rows(read_shard(list_shards(str(tmp_path))[0]))
    assert got == {
        "hf/7": ("kept", None, "bytes caption here", None),
        "hf/8": ("rejected", "missing_image", "x", None),
        "hf/7~dup1": ("rejected", "duplicate_key", "y", None),
    }


@pytest.mark.parametrize(
    ("column", "images"),
    [
        (pa.array([b"i1", None, b"i3"], pa.large_binary()), [b"i1", None, b"i3"]),
        (pa.array([b"i1", b"i2", b"i3"], pa.binary(2)), [b"i1", b"i2", b"i3"]),  # fixed size
        (pa.array(["i1", "i2", "i3"], pa.string()), [None, None, None]),  # text is no image bytes
        (pa.array([{"path": "a.jpg"}] * 3, pa.struct([("path", pa.string())])), [None, None, None]),
    ],
)
def test_parquet_image_columns_of_other_types(tmp_path, column, images):
    table = pa.table({"jpg": column, "caption": ["a b c"] * 3, "key": ["k0", "k1", "k2"]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=2)  # two row groups
    got = read_shard(list_shards(str(tmp_path))[0])
    assert got.column("image").to_pylist() == images
    assert got.column("reject_reason").to_pylist() == [None if i is not None else "missing_image" for i in images]


def test_a_corrupt_row_group_costs_only_its_own_rows(tmp_path):
    table = pa.table(
        {"jpg": [bytes([i]) * 2000 for i in range(6)], "caption": ["a b c"] * 6, "key": [f"k{i}" for i in range(6)]}
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=2, compression="none")
    data = bytearray(buf.getvalue())
    offset = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(1).column(0).data_page_offset
    data[offset + 5 : offset + 40] = b"\xff" * 35
    (tmp_path / "rg.parquet").write_bytes(bytes(data))
    got = rows(read_shard(list_shards(str(tmp_path))[0]))
    assert [k for k, v in got.items() if v[0] == "kept"] == ["rg/k0", "rg/k1", "rg/k4", "rg/k5"]
    assert {k: v[1] for k, v in got.items() if v[0] == "rejected"} == {
        "rg/!row-group-1-0": "broken_row_group",
        "rg/!row-group-1-1": "broken_row_group",
    }


# ---- tars -------------------------------------------------------------------------------------------


def test_tar_members_in_folders_and_interleaved_order(tmp_path):
    write_tar(
        tmp_path / "s.tar",
        [
            ("d1/a.jpg", b"1"),
            ("d2/a.jpg", b"2"),
            ("d1/a.txt", b"one"),
            ("./b.jpg", b"3"),
            ("d2/a.txt", b"two"),
            ("b.txt", b"three"),
            ("b.cls", b"7"),
        ],
    )
    with tarfile.open(tmp_path / "s.tar", "a") as tar:
        folder = tarfile.TarInfo("d3")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
    table = read_shard(list_shards(str(tmp_path))[0])
    got = {k: (img, cap) for k, img, cap in zip(*(table.column(c).to_pylist() for c in ("key", "image", "caption")))}
    assert got == {"s/d1/a": (b"1", "one"), "s/d2/a": (b"2", "two"), "s/b": (b"3", "three")}


def test_a_second_image_for_the_same_name_starts_a_duplicate_sample(tmp_path):
    # As webdataset groups: a repeated slot starts a new sample, and later members join the newest one.
    write_tar(tmp_path / "s.tar", [("a.jpg", b"1"), ("a.png", b"2"), ("a.txt", b"cap")])
    got = rows(read_shard(list_shards(str(tmp_path))[0]))
    assert got == {
        "s/a": ("rejected", "missing_caption", None, None),
        "s/a~dup1": ("rejected", "duplicate_key", "cap", None),
    }


def test_an_oversized_member_is_skipped_unread_and_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(webdataset, "MAX_MEMBER_BYTES", 1000)
    write_tar(
        tmp_path / "s.tar", [("big.jpg", b"x" * 5000), ("big.txt", b"cap"), ("ok.jpg", b"y" * 10), ("ok.txt", b"c")]
    )
    got = rows(read_shard(list_shards(str(tmp_path))[0]))
    assert {k: v[:2] for k, v in got.items()} == {"s/big": ("rejected", "too_large"), "s/ok": ("kept", None)}


# ---- values -----------------------------------------------------------------------------------------


def test_caption_rules():
    assert clean_caption("a\x00b") == ("ab", None)
    assert clean_caption(b"\xff ok") == ("\ufffd ok", None)
    assert clean_caption("x" * (MAX_CAPTION_CHARS + 1)) == ("x" * MAX_CAPTION_CHARS, RejectReason.CAPTION_TOO_LONG)
    assert clean_caption("x" * MAX_CAPTION_CHARS) == ("x" * MAX_CAPTION_CHARS, None)
    for value in (None, float("nan"), 3, 2.5, ["a"], {"a": 1}):
        assert clean_caption(value) == (None, RejectReason.MISSING_CAPTION)
    assert clean_caption("") == ("", None)  # the basic filter rejects it as too short


def test_name_rules():
    assert clean_name("a\nb\x00c") == "a?b?c"
    assert clean_name(12) == "12" and clean_name(float("nan")) is None and clean_name("") is None
    long = clean_name("k" * 10_000)
    assert len(long) < 300 and long != clean_name("k" * 10_001)
    assert clean_name("bad\udcffname") == "bad\ufffdname"


def test_unique_key_picks_the_first_free_suffix():
    seen: set[str] = set()
    assert unique_key("s/a", seen) == ("s/a", False)
    assert unique_key("s/a~dup1", seen) == ("s/a~dup1", False)
    assert unique_key("s/a", seen) == ("s/a~dup2", True)
