"""Parquet files of the job: the image bytes written as they are, the other columns encoded as usual,
the same bytes for the same table, and an atomic write that hashes what it wrote."""

import hashlib
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curation.io.commit import Location, parquet_buffer, parquet_bytes
from curation.job import in_key_order
from curation.schema import embedding_type


def jpeg(seed: int) -> bytes:
    pixels = (np.random.default_rng(seed).random((64, 96, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG")
    return buf.getvalue()


def scored_like(n: int = 40) -> pa.Table:
    emb = np.random.default_rng(0).random((n, 8)).astype(np.float16)
    return pa.table(
        {
            "key": [f"s/{i:03d}" for i in range(n)],
            "image": [jpeg(i) for i in range(n)],
            "img_emb": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), type=embedding_type(8)),
            "status": ["kept" if i % 3 else "rejected" for i in range(n)],
        }
    )


def column_chunks(data) -> dict:
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata.row_group(0)
    return {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}


def test_image_bytes_skip_dictionary_and_statistics_other_columns_keep_them():
    chunks = column_chunks(
        parquet_buffer(scored_like(), compression={"image": "none", "key": "zstd", "img_emb": "zstd", "status": "zstd"})
    )
    assert not chunks["image"].is_stats_set and not chunks["image"].has_dictionary_page
    assert chunks["image"].compression == "UNCOMPRESSED"
    assert chunks["key"].is_stats_set and chunks["key"].statistics.min == "s/000"
    assert chunks["status"].has_dictionary_page  # two distinct values
    assert chunks["img_emb.list.element"].is_stats_set


def test_tables_without_images_encode_every_column():
    table = scored_like().drop_columns(["image"])
    chunks = column_chunks(parquet_buffer(table))
    assert all(c.is_stats_set for c in chunks.values()) and chunks["status"].has_dictionary_page


def test_same_table_same_bytes_and_round_trip(tmp_path):
    table = scored_like()
    data = parquet_buffer(table)
    assert data == parquet_buffer(pa.concat_tables([table.slice(0, 7), table.slice(7)]).combine_chunks())
    assert parquet_bytes(table) == data.to_pybytes()
    location = Location.of(str(tmp_path))
    digest = location.write_bytes(data, "scored", "s.parquet")
    written = (tmp_path / "scored" / "s.parquet").read_bytes()
    assert digest == hashlib.sha256(written).hexdigest() and written == data.to_pybytes()
    assert [p.name for p in (tmp_path / "scored").iterdir()] == ["s.parquet"]  # no temporary file left
    assert pq.read_table(tmp_path / "scored" / "s.parquet").equals(table)


def test_key_order_without_copying_a_sorted_table():
    table = scored_like(10)
    shuffled = table.take([3, 0, 9, 1, 2, 8, 4, 7, 6, 5])
    assert in_key_order(shuffled).equals(table)
    split = pa.concat_tables([table.slice(0, 4), table.slice(4)])
    ordered = in_key_order(split)
    assert ordered.equals(table) and ordered.column("image").num_chunks == 1
    assert parquet_buffer(ordered) == parquet_buffer(table.sort_by("key"))
    unsorted_keys = table.set_column(0, "key", pa.array([f"s/{9 - i:03d}" for i in range(10)]))
    assert in_key_order(unsorted_keys).column("key").to_pylist() == sorted(unsorted_keys.column("key").to_pylist())


def test_one_codec_for_the_table_leaves_image_bytes_uncompressed():
    for codec, name in (("zstd", "ZSTD"), ("gzip", "GZIP"), ("none", "UNCOMPRESSED")):
        chunks = column_chunks(parquet_buffer(scored_like(), compression=codec))
        assert chunks["image"].compression == "UNCOMPRESSED"
        assert chunks["key"].compression == chunks["status"].compression == name
