import numpy as np
import pyarrow as pa

from curation.dedup import semantic
from curation.dedup.decisions import DECISION_SCHEMA
from curation.dedup.semantic import (
    against_index_decisions,
    assign_clusters,
    cluster_decisions,
    fit_centroids,
    normalize,
    semantic_dedup,
)
from curation.schema import DupKind


def _unit(rng, n, d=32):
    return normalize(rng.standard_normal((n, d)))


def _near(x, rng, noise):
    """A copy of each row at cosine ~ 1 / sqrt(1 + noise^2)."""
    return normalize(x + rng.standard_normal(x.shape) * noise / np.sqrt(x.shape[1]))


def test_kmeans_is_seeded_and_assignment_picks_the_nearest_centroid():
    rng = np.random.default_rng(0)
    centres = _unit(rng, 4)
    x = np.vstack([_near(np.repeat(c[None], 50, 0), rng, 0.3) for c in centres]).astype(np.float16)
    a = fit_centroids(x, k=4, seed=3, niter=10)
    assert a.shape == (4, 32) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(a, fit_centroids(x, k=4, seed=3, niter=10))
    labels = assign_clusters(x, a)
    assert labels.dtype == np.int64
    assert np.array_equal(labels, np.argmax(normalize(x) @ a.T, axis=1))
    assert len(set(labels[:50])) == 1 and len(set(labels)) == 4  # one cluster per planted centre
    assert fit_centroids(x[:3], k=10, seed=0).shape == (3, 32)  # k never exceeds the sample


def test_cluster_groups_pairs_above_threshold_only():
    rng = np.random.default_rng(1)
    base = _unit(rng, 40)
    copies = _near(base[:10], rng, 0.05)  # cosine ~0.9988
    far = _near(base[10:20], rng, 0.4)  # cosine ~0.93: not a duplicate at eps 0.02
    emb = np.vstack([base, copies, far]).astype(np.float16)
    keys = [f"r/{i:03d}" for i in range(len(emb))]
    quality = np.r_[np.zeros(40), np.ones(10), np.ones(10)]  # copies are better than their originals
    out = cluster_decisions(keys, emb, quality, eps=0.02)
    assert out.schema == DECISION_SCHEMA
    assert out.column("key").to_pylist() == keys[:10]
    assert out.column("dup_of").to_pylist() == keys[40:50]
    assert set(out.column("dup_kind").to_pylist()) == {DupKind.SEMANTIC.value}
    assert cluster_decisions(keys[:1], emb[:1], [1.0], eps=0.02).num_rows == 0


def test_blockwise_pairs_match_the_full_matrix(monkeypatch):
    rng = np.random.default_rng(2)
    x = _unit(rng, 300, 8)  # low dimension: many pairs near any threshold
    full = set(zip(*semantic.similar_pairs(x, min_cosine=0.9)))
    monkeypatch.setattr(semantic, "PAIR_BLOCK_ENTRIES", 300 * 7)  # 7-row blocks
    assert set(zip(*semantic.similar_pairs(x, min_cosine=0.9))) == full
    s = x @ x.T
    i, j = np.triu_indices(300, 1)
    assert full == set(zip(i[s[i, j] >= 0.9], j[s[i, j] >= 0.9]))


def test_semantic_dedup_finds_planted_copies_deterministically():
    rng = np.random.default_rng(3)
    base = np.vstack([_near(np.repeat(c[None], 200, 0), rng, 0.6) for c in _unit(rng, 5)])
    copies = _near(base[::10], rng, 0.05)
    emb = np.vstack([base, copies]).astype(np.float16)
    order = rng.permutation(len(emb))
    keys = pa.array([f"k/{int(i):05d}" for i in order])
    quality = rng.random(len(emb))
    out = semantic_dedup(keys, emb, quality, k=5, eps=0.02, seed=0, sample_size=500)
    assert out.num_rows == len(copies)
    group = np.full(len(emb), -1)
    group[: len(base) : 10] = group[len(base) :] = np.arange(len(copies))  # original and its copy
    row = {k: i for i, k in enumerate(keys.to_pylist())}
    for key, dup in zip(out.column("key").to_pylist(), out.column("dup_of").to_pylist()):
        assert group[row[key]] >= 0 and group[row[key]] == group[row[dup]]
    again = semantic_dedup(keys, emb, quality, k=5, eps=0.02, seed=0, sample_size=500)
    assert again.equals(out)


def test_against_index_new_rows_point_at_old_rows():
    rng = np.random.default_rng(4)
    old = _unit(rng, 50)
    old_keys = [f"old/{i:02d}" for i in range(50)]
    new = np.vstack([_near(old[:5], rng, 0.05), _unit(rng, 5), old[7:8], old[7:8]])
    new_keys = [f"new/{i:02d}" for i in range(len(new))]
    out = against_index_decisions(new_keys, new, old_keys, old, eps=0.02, kind=DupKind.PREVIOUS_REFRESH)
    assert out.to_pylist() == [
        {"key": f"new/{i:02d}", "dup_of": f"old/{j:02d}", "dup_kind": "previous_refresh"}
        for i, j in [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (10, 7), (11, 7)]
    ]
    # Equal old rows: the smallest key wins, whatever the index order.
    twice = np.vstack([old[7:8], old[7:8]])
    out = against_index_decisions(["n"], old[7:8], ["old/b", "old/a"], twice, eps=0.0, kind=DupKind.EVAL)
    assert out.to_pylist() == [{"key": "n", "dup_of": "old/a", "dup_kind": "eval"}]
    assert against_index_decisions([], old[:0], old_keys, old, eps=0.02).num_rows == 0


def test_captions_that_disagree_keep_look_alike_images_apart():
    # Rows 0-1: one picture twice, described alike (a duplicate); rows 2-3: look-alike pictures of two
    # different things (described differently). With a text_eps only the first pair is a duplicate.
    rng = np.random.default_rng(5)
    a, b = _unit(rng, 2)
    image = normalize(np.stack([a, _near(a[None], rng, 0.1)[0], b, _near(b[None], rng, 0.1)[0]]))
    text = normalize(np.stack([a, _near(a[None], rng, 0.05)[0], b, _unit(rng, 1)[0]]))
    keys, quality = ["k0", "k1", "k2", "k3"], [0.5, 0.9, 0.5, 0.9]
    images_alone = cluster_decisions(keys, image, quality, eps=0.05)
    assert images_alone.column("key").to_pylist() == ["k0", "k2"]
    both = cluster_decisions(keys, image, quality, eps=0.05, text_emb=text, text_eps=0.05)
    assert both.column("key").to_pylist() == ["k0"] and both.column("dup_of").to_pylist() == ["k1"]
    # the same against an earlier refresh's kept rows; old rows without captions: images alone
    old = against_index_decisions(
        ["k1", "k3"],
        image[[1, 3]],
        ["o0", "o2"],
        image[[0, 2]],
        eps=0.05,
        new_text=text[[1, 3]],
        old_text=text[[0, 2]],
        text_eps=0.05,
    )
    assert old.column("key").to_pylist() == ["k1"] and old.column("dup_of").to_pylist() == ["o0"]
    no_text = against_index_decisions(
        ["k1", "k3"],
        image[[1, 3]],
        ["o0", "o2"],
        image[[0, 2]],
        eps=0.05,
        new_text=text[[1, 3]],
        old_text=None,
        text_eps=0.05,
    )
    assert no_text.column("key").to_pylist() == ["k1", "k3"]


def test_the_state_keeps_caption_embeddings_beside_an_older_state_without_them(tmp_path):
    from curation.dedup.state import cluster_file, compact_clusters, read_cluster_state, state_rows
    from curation.io.commit import Location, parquet_bytes

    emb = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(8, np.float16)), 4)
    older = pa.table({"key": ["a"], "sha256": ["s"], "phash": pa.array([1], pa.uint64()), "img_emb": emb.slice(0, 1)})
    alive = pa.table(
        {
            "key": ["b"],
            "sha256": ["t"],
            "phash": pa.array([2], pa.uint64()),
            "img_emb": emb.slice(1, 1),
            "txt_emb": emb.slice(0, 1),
            "clip_score": [0.5],
        }
    )
    state = state_rows(alive)
    assert state.column_names == ["key", "sha256", "phash", "img_emb", "txt_emb"]
    assert state_rows(alive.drop_columns(["txt_emb"])).column_names == ["key", "sha256", "phash", "img_emb"]
    earlier, this = str(tmp_path / "earlier"), str(tmp_path / "this")
    Location.of(earlier).write_bytes(parquet_bytes(older), cluster_file(3))
    Location.of(this).write_bytes(parquet_bytes(state), cluster_file(3))
    both = read_cluster_state([earlier, this], 3)
    assert both.column("key").to_pylist() == ["a", "b"] and both.column("txt_emb").null_count == 1
    # Folded into one base, twice (an interrupted compaction redone): each row once.
    for _ in range(2):
        compact_clusters(pa.table({"id": [3, 4]}), output_url=this, chain=[earlier])
        base = read_cluster_state([this], 3)
        assert base.column("key").to_pylist() == ["a", "b"] and base.column("txt_emb").null_count == 1
    assert read_cluster_state([this], 4) is None
