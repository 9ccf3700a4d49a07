"""DataComp's image-based filter: the decision functions, without Ray."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.dedup.contamination import embed_eval_sets
from curation.dedup.decisions import apply_decisions
from curation.dedup.image_filter import OUTSIDE_REFERENCE, inside_rows, outside_decisions, reference_clusters
from curation.dedup.semantic import assign_clusters, fit_centroids
from curation.errors import UserError
from curation.schema import embedding_type


def _blobs(rng, centres, per_blob, spread=0.05):
    points = np.concatenate([c + spread * rng.standard_normal((per_blob, len(c))) for c in centres])
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def _rows(emb: np.ndarray) -> pa.Table:
    keys = [f"s/{i:04d}" for i in range(len(emb))]
    column = pa.FixedSizeListArray.from_arrays(pa.array(emb.astype(np.float16).ravel()), emb.shape[1])
    return pa.table({"key": keys, "img_emb": column.cast(embedding_type(emb.shape[1]))})


@pytest.fixture
def world():
    rng = np.random.default_rng(0)
    centres = np.eye(16, dtype=np.float32)[:4]  # four well separated directions; blob 1 nearest to blob 0
    centres[1] = (centres[0] + centres[1]) / np.sqrt(2)
    pool = _blobs(rng, centres, per_blob=50)
    centroids = fit_centroids(pool, k=4, seed=0)
    return rng, centres, pool, centroids


def test_reference_images_pick_their_nearest_clusters(world):
    rng, centres, pool, centroids = world
    reference = _blobs(rng, centres[:1], per_blob=5)  # reference images all look like blob 0
    blob_cluster = assign_clusters(centres, centroids)
    assert len(set(blob_cluster)) == 4
    assert reference_clusters(reference, centroids, nearest=1).tolist() == [blob_cluster[0]]
    assert reference_clusters(reference, centroids, nearest=2).tolist() == sorted(blob_cluster[:2])
    assert len(reference_clusters(np.zeros((0, 16), np.float32), centroids)) == 0


def test_rows_outside_the_reference_clusters_are_rejected_and_the_rest_go_on(world):
    rng, centres, pool, centroids = world
    rows = _rows(pool)
    allowed = reference_clusters(_blobs(rng, centres[1:3], per_blob=5), centroids, nearest=1)
    inside = inside_rows(rows, centroids=centroids, allowed=allowed)
    outside = outside_decisions(rows, centroids=centroids, allowed=allowed)
    # blobs 1 and 2 (rows 50-149) stay; blobs 0 and 3 are outside
    assert inside.column("key").to_pylist() == [f"s/{i:04d}" for i in range(50, 150)]
    assert sorted(outside.column("key").to_pylist()) == [f"s/{i:04d}" for i in [*range(50), *range(150, 200)]]
    assert set(outside.column("dup_kind").to_pylist()) == {OUTSIDE_REFERENCE}
    assert outside.column("dup_of").null_count == outside.num_rows
    empty = rows.slice(0, 0)
    assert outside_decisions(empty, centroids=centroids, allowed=allowed).num_rows == 0
    assert inside_rows(empty, centroids=centroids, allowed=allowed).num_rows == 0


def test_applied_filter_decision_is_a_rejection_without_dup_of():
    table = pa.table(
        {
            "key": ["a", "b"],
            "status": ["kept", "kept"],
            "reject_reason": pa.nulls(2, pa.string()),
            "reject_stage": pa.nulls(2, pa.string()),
        }
    )
    applied = apply_decisions(table, {"a": (None, OUTSIDE_REFERENCE)}).to_pylist()
    assert applied[0] == {
        "key": "a",
        "status": "rejected",
        "reject_reason": "outside_reference_clusters",
        "reject_stage": "image_filter",
        "dup_of": None,
        "dup_kind": None,
    }
    assert applied[1]["status"] == "kept" and applied[1]["reject_reason"] is None


def test_a_missing_reference_set_names_the_setting(tmp_path):
    with pytest.raises(UserError, match="image_filter.reference entry .* does not exist"):
        embed_eval_sets([str(tmp_path / "nowhere")], [], setting="image_filter.reference")
