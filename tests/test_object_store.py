"""Jobs that read from and write to S3 (moto's server on loopback, through a fault-injecting proxy)."""

from __future__ import annotations

import os
from pathlib import Path

import fsspec
import pytest

from curation.config import load_config
from curation.errors import UserError
from curation.io.sources import list_shards
from curation.runner import run_job

pytestmark = pytest.mark.ray


def curate(input_url, output_url):
    cfg = load_config("pipelines/demo.yaml", ["model.threads=1"])
    return run_job(cfg, input_url, output_url, log=lambda _: None)


def upload(local_dir: Path, bucket: str, prefix: str) -> str:
    fs = fsspec.filesystem("s3")
    for path in sorted(local_dir.iterdir()):
        fs.put_file(str(path), f"{bucket}/{prefix}/{path.name}")
    return f"s3://{bucket}/{prefix}"


def kept_bytes_s3(output_url: str) -> dict[str, bytes]:
    fs, root = fsspec.core.url_to_fs(output_url)
    fs.invalidate_cache()
    return {p.rsplit("/", 1)[1]: fs.cat_file(p) for p in sorted(fs.glob(f"{root}/kept/*.parquet"))}


def kept_bytes_local(output: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((output / "kept").glob("*.parquet"))}


@pytest.fixture(scope="module")
def local_reference(ray_local, small_world, tmp_path_factory):
    output = tmp_path_factory.mktemp("local") / "out"
    curate(str(small_world[0]), str(output))
    return kept_bytes_local(output)


def test_s3_job_gives_the_same_kept_bytes_as_local(small_world, s3_bucket, local_reference):
    input_url = upload(small_world[0], s3_bucket, "raw")
    result = curate(input_url, f"s3://{s3_bucket}/curated")
    assert kept_bytes_s3(f"s3://{s3_bucket}/curated") == local_reference
    fs = fsspec.filesystem("s3")
    assert fs.exists(f"{s3_bucket}/curated/_SUCCESS")
    manifest = fs.cat_file(f"{s3_bucket}/curated/_manifest.json").decode()
    assert "testing" not in manifest  # credentials never reach the manifest
    assert result.manifest["funnel"]["input"] == 400


def test_job_survives_a_throttling_store(small_world, s3_bucket, s3_proxy, local_reference):
    input_url = upload(small_world[0], s3_bucket, "raw")
    s3_proxy.fault_rate = 0.2
    faults_before = s3_proxy.faults
    curate(input_url, f"s3://{s3_bucket}/curated")
    injected = s3_proxy.faults - faults_before
    s3_proxy.fault_rate = 0.0
    assert injected > 10
    assert kept_bytes_s3(f"s3://{s3_bucket}/curated") == local_reference


def test_missing_bucket_is_one_clear_line(s3_proxy):
    with pytest.raises(UserError, match="does not exist"):
        list_shards("s3://no-such-bucket-here/raw")


def test_access_denied_names_the_url_and_the_credential_source(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):  # root reads anything: use S3's answer instead
            from curation.io.sources import access_denied

            message = access_denied("s3://bucket/raw", "s3")
            assert message.startswith("access denied to s3://bucket/raw with AWS credentials from env")
        else:
            with pytest.raises(UserError, match="access denied to"):
                list_shards(str(locked / "x"))
    finally:
        locked.chmod(0o755)
