import numpy as np
import pyarrow as pa
import pytest

from curation.dedup.decisions import DECISION_SCHEMA, pick_survivor
from curation.dedup.groups import (
    connected_components,
    decisions_from_components,
    nearest_old_decisions,
    pair_decisions,
)
from curation.schema import DupKind


def _reference_components(n, left, right):
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in zip(left, right):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = [find(i) for i in range(n)]
    smallest = {}
    for i, r in enumerate(roots):
        smallest.setdefault(r, i)
    return [smallest[r] for r in roots]


def test_components_match_a_plain_union_find():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(1, 50))
        m = int(rng.integers(0, 60))
        left, right = rng.integers(0, n, m), rng.integers(0, n, m)
        assert connected_components(n, left, right).tolist() == _reference_components(n, left, right)


def test_components_do_not_depend_on_edge_order_and_handle_long_chains():
    rng = np.random.default_rng(1)
    n = 100_000
    left = np.arange(n - 1)
    order = rng.permutation(n - 1)
    labels = connected_components(n, left[order], left[order] + 1)
    assert (labels == 0).all()
    labels = connected_components(n, np.array([5, 7]), np.array([3, 3]))
    assert labels[[3, 5, 7]].tolist() == [3, 3, 3] and labels[0] == 0


def test_survivor_is_best_quality_then_smallest_key():
    keys = ["b", "a", "c", "e", "d", "f"]
    quality = [0.5, 0.5, 0.1, None, float("nan"), 0.3]
    labels = np.array([0, 0, 0, 3, 3, 5])
    out = decisions_from_components(keys, quality, labels, DupKind.NEAR)
    assert out.schema == DECISION_SCHEMA
    assert out.to_pylist() == [
        {"key": "b", "dup_of": "a", "dup_kind": "near"},
        {"key": "c", "dup_of": "a", "dup_kind": "near"},
        {"key": "e", "dup_of": "d", "dup_kind": "near"},  # both missing: smallest key survives
    ]


def test_decisions_agree_with_pick_survivor():
    rng = np.random.default_rng(2)
    n = 400
    keys = [f"k{int(i)}" for i in rng.permutation(n)]
    quality = rng.integers(0, 4, n).astype(float).tolist()  # many ties
    labels = rng.integers(0, 60, n)
    out = decisions_from_components(keys, quality, labels, "semantic")
    dup_of = dict(zip(out.column("key").to_pylist(), out.column("dup_of").to_pylist()))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        survivor = keys[members[pick_survivor([keys[i] for i in members], [quality[i] for i in members])]]
        for i in members:
            assert dup_of.get(keys[i]) == (None if keys[i] == survivor else survivor)


def test_pairs_join_transitively_and_no_pairs_decide_nothing():
    keys = pa.array(["r/3", "r/1", "r/2", "r/4"])
    out = pair_decisions(keys, np.zeros(4), np.array([0, 1]), np.array([1, 2]), DupKind.SEMANTIC)
    assert out.column("key").to_pylist() == ["r/2", "r/3"]
    assert set(out.column("dup_of").to_pylist()) == {"r/1"}
    assert pair_decisions(keys, np.zeros(4), np.array([]), np.array([]), DupKind.SEMANTIC).num_rows == 0


@pytest.mark.parametrize(("cost", "expected"), [([1.0, 1.0, 2.0], "o/a"), ([0.5, 1.0, 1.0], "o/b")])
def test_nearest_old_row_wins_then_smallest_key(cost, expected):
    new = pa.array(["n/1", "n/2"])
    old = pa.array(["o/b", "o/a", "o/c"])
    out = nearest_old_decisions(new, old, np.array([0, 0, 0]), np.array([0, 1, 2]), np.array(cost), DupKind.EVAL)
    assert out.to_pylist() == [{"key": "n/1", "dup_of": expected, "dup_kind": "eval"}]
