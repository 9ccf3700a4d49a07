"""DataComp's image-based filter end to end: pool rows far from a reference image set are rejected."""

from __future__ import annotations

import tarfile

import pyarrow.dataset as pads
import pytest

from curation.config import load_config
from curation.runner import run_job

pytestmark = pytest.mark.ray


def _reference_set(folder, input_dir, keys: list[str]) -> None:
    """The images of some pool rows, copied out: the 'ImageNet' of this test."""
    folder.mkdir()
    shard = keys[0].split("/")[0]
    with tarfile.open(input_dir / f"{shard}.tar") as tar:
        for member in tar.getmembers():
            if f"{shard}/{member.name.split('.')[0]}" in keys and member.name.endswith(".jpg"):
                (folder / member.name).write_bytes(tar.extractfile(member).read())
    assert len(list(folder.iterdir())) == len(keys)


def test_rows_outside_the_reference_clusters_are_rejected(ray_local, small_world, tmp_path):
    input_dir, truth = small_world
    in_groups = {k for g in truth["duplicate_groups"] for k in [g["original"], *g["copies"]]}
    clean = [k for k, label in sorted(truth["labels"].items()) if label == "clean" and k not in in_groups]
    first_shard = [k for k in clean if k.startswith(truth["shards"][0] + "/")]
    chosen = first_shard[:: len(first_shard) // 4][:4]
    _reference_set(tmp_path / "reference", input_dir, chosen)
    overrides = ["model.threads=1", f"image_filter.reference=['{tmp_path / 'reference'}']", "image_filter.clusters=8"]
    result = run_job(
        load_config("pipelines/demo.yaml", overrides), str(input_dir), str(tmp_path / "out"), log=lambda _: None
    )

    kept = pads.dataset(str(tmp_path / "out" / "kept")).to_table(columns=["key"]).column("key").to_pylist()
    rejected = (
        pads.dataset(str(tmp_path / "out" / "rejected"))
        .to_table(columns=["key", "reject_reason", "reject_stage", "dup_of", "dup_kind"])
        .to_pylist()
    )
    assert len(kept) + len(rejected) == truth["rows"] == result.manifest["funnel"]["input"]
    outside = {r["key"] for r in rejected if r["reject_reason"] == "outside_reference_clusters"}
    assert outside and kept
    assert result.manifest["funnel"]["rejected_by_reason"]["outside_reference_clusters"] == len(outside)
    assert all(
        r["reject_stage"] == "image_filter" and r["dup_of"] is None and r["dup_kind"] is None
        for r in rejected
        if r["key"] in outside
    )
    # the filter ran before dedup: no duplicate points at a row it rejected
    assert not {r["dup_of"] for r in rejected if r["dup_of"]} & outside

    # a pool row holding a reference image lies in that image's nearest cluster: never filtered out
    assert not outside & set(chosen)

    def like_reference(keys) -> float:
        """Mean over rows of the attributes (shape, colour, count, texture, background) shared with
        the most alike reference image."""
        references = [truth["scenes"][k] for k in chosen]
        shared = [max(sum(truth["scenes"][k][a] == ref[a] for a in ref) for ref in references) for k in keys]
        return sum(shared) / len(keys)

    # what survives looks like the reference images (shares more attributes) more than what was turned away
    assert like_reference(kept) > like_reference(outside)
