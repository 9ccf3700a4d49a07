"""Listing a large input on an object store (moto's S3 server on loopback, every request seen by the
proxy in front of it) costs a constant number of requests plus reads done side by side, never one
request per shard after another: one LIST of the prefix (a page per thousand names), no read at all for
tars, one footer read per Parquet shard in flight together, one LIST for the committed scored shards."""

from __future__ import annotations

import io
import json
import math
import tarfile
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.io.sources import list_shards
from curation.job import JobPaths

pytestmark = pytest.mark.slow  # about 40 s: moto answers a LIST page of a thousand names in about a second

TARS = 10_000  # webdataset shards, each with img2dataset's metadata Parquet beside it
PARQUETS = 500  # Parquet shards with image bytes: one footer read each
PAGE = 1000  # names in one S3 LIST page


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def webdataset_tar(samples: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for i in range(samples):
            for ext, data in (
                ("jpg", jpeg(i)),
                ("txt", f"a photo number {i}".encode()),
                ("json", json.dumps({"url": f"https://example.com/{i}.jpg"}).encode()),
            ):
                member = tarfile.TarInfo(f"{i:09d}.{ext}")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def metadata_parquet(samples: int) -> bytes:
    """img2dataset's metadata of a webdataset shard (its status/error_message columns)."""
    return parquet_bytes(
        pa.table(
            {
                "key": [f"{i:09d}" for i in range(samples)],
                "url": [f"https://example.com/{i}.jpg" for i in range(samples)],
                "caption": [f"a photo number {i}" for i in range(samples)],
                "status": ["success"] * samples,
                "error_message": pa.nulls(samples, pa.string()),
            }
        )
    )


def put_objects(bucket: str, objects: dict[str, bytes]) -> None:
    """Store the objects straight into moto's backend (this process runs the server): ten thousand PUTs
    over HTTP would take minutes on a small machine. Only the listing under test goes over the wire."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for key, data in objects.items():
        backend.put_object(bucket, key, data)


def requests_during(proxy, action):
    """What `action` returns, the requests it sent as (kind, path), and its wall seconds."""
    start = len(proxy.log)
    proxy.peak_in_flight = 0
    began = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - began
    return result, [(kind_of(method, path), path) for method, path in proxy.log[start:]], seconds


def kind_of(method: str, path: str) -> str:
    """LIST (a bucket with a list query), a read of one object (GET of a key), or another method."""
    if method == "GET" and "list-type=" in path:
        return "list"
    if method == "GET" and "?" not in path and path.strip("/").count("/") >= 1:
        return "read"
    return method.lower()


def single_request_seconds(bucket: str, key: str) -> float:
    import fsspec

    fs = fsspec.filesystem("s3")
    began = time.perf_counter()
    fs.cat_file(f"{bucket}/{key}", start=0, end=16)
    return time.perf_counter() - began


def test_ten_thousand_tars_are_listed_with_list_pages_and_one_footer_read(s3_bucket, s3_proxy):
    tar, metadata = webdataset_tar(3), metadata_parquet(3)
    assert 4 * len(metadata) < len(tar)  # as in real output: metadata is small beside its tar
    put_objects(
        s3_bucket,
        {f"wds/{i:05d}.{ext}": data for i in range(TARS) for ext, data in (("tar", tar), ("parquet", metadata))},
    )
    shards, sent, seconds = requests_during(s3_proxy, lambda: list_shards(f"s3://{s3_bucket}/wds"))

    assert len(shards) == TARS and {s.format for s in shards} == {"webdataset"}
    kinds = Counter(kind for kind, _ in sent)
    pages = math.ceil(2 * TARS / PAGE)
    assert pages <= kinds["list"] <= pages + 2, kinds
    # No tar is opened; of the 10,000 metadata Parquet files beside them one footer is read.
    assert kinds["read"] == 1, kinds
    assert sum(kinds.values()) <= pages + 5, kinds
    one = single_request_seconds(s3_bucket, "wds/00000.tar")
    print(
        f"\nlisted {TARS} tar shards ({2 * TARS} objects) in {seconds:.2f} s with {dict(kinds)}; one request {one:.4f} s"
    )


def test_parquet_footers_are_read_side_by_side_once_each(s3_bucket, s3_proxy):
    shard = parquet_bytes(pa.table({"jpg": [jpeg(0), jpeg(1)], "caption": ["a photo", "another photo"]}))
    put_objects(s3_bucket, {f"pq/{i:05d}.parquet": shard for i in range(PARQUETS)})
    shards, sent, seconds = requests_during(s3_proxy, lambda: list_shards(f"s3://{s3_bucket}/pq"))

    assert len(shards) == PARQUETS and {s.format for s in shards} == {"parquet"}
    kinds = Counter(kind for kind, _ in sent)
    reads = Counter(path for kind, path in sent if kind == "read")
    # One ranged read of each footer, with the size the listing gave: no HEAD, no second read.
    assert len(reads) == PARQUETS and set(reads.values()) == {1}, kinds
    assert kinds["list"] <= math.ceil(PARQUETS / PAGE) + 2 and sum(kinds.values()) <= PARQUETS + 5, kinds
    assert s3_proxy.peak_in_flight > 1  # the reads overlap
    print(
        f"\nlisted {PARQUETS} Parquet shards in {seconds:.2f} s with {dict(kinds)}, "
        f"up to {s3_proxy.peak_in_flight} requests in flight"
    )


def test_committed_scored_shards_are_found_with_one_listing(s3_bucket, s3_proxy):
    shards = 2_500
    put_objects(s3_bucket, {f"out/_work/scored/s{i:05d}.parquet": b"PAR1" for i in range(shards)})
    put_objects(s3_bucket, {"out/_work/scored/.tmp-0123-s99999.parquet": b"PAR1"})  # a write in progress
    paths = JobPaths(output_url=f"s3://{s3_bucket}/out", work_url=f"s3://{s3_bucket}/out/_work")
    scored, sent, _ = requests_during(s3_proxy, paths.scored_ids)

    assert scored == {f"s{i:05d}" for i in range(shards)}
    kinds = Counter(kind for kind, _ in sent)
    assert kinds["list"] == math.ceil((shards + 1) / PAGE) and sum(kinds.values()) == kinds["list"], kinds
