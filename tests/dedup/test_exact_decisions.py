import pyarrow as pa

from curation.dedup.decisions import apply_decisions, pick_survivor
from curation.dedup.exact import exact_group_decisions


def test_survivor_is_best_quality_then_smallest_key():
    assert pick_survivor(["b", "a", "c"], [0.5, 0.5, 0.1]) == 1
    assert pick_survivor(["b", "a"], [0.9, 0.5]) == 0
    assert pick_survivor(["b", "a"], [None, None]) == 1
    assert pick_survivor(["b", "a"], [float("nan"), 0.1]) == 1


def test_exact_group_marks_all_but_one():
    group = pa.table({"key": ["s/3", "s/1", "s/2"], "sha256": ["h"] * 3, "clip_score": [0.2, 0.2, 0.1]})
    decisions = exact_group_decisions(group, quality="clip_score")
    assert sorted(decisions.column("key").to_pylist()) == ["s/2", "s/3"]
    assert set(decisions.column("dup_of").to_pylist()) == {"s/1"}
    assert set(decisions.column("dup_kind").to_pylist()) == {"exact"}
    assert exact_group_decisions(group.slice(0, 1)).num_rows == 0


def test_apply_rejects_only_kept_rows():
    table = pa.table(
        {
            "key": ["s/1", "s/2", "s/3"],
            "status": ["kept", "kept", "rejected"],
            "reject_reason": [None, None, "image_too_small"],
            "reject_stage": [None, None, "basic"],
        }
    )
    out = apply_decisions(table, {"s/2": ("s/1", "exact"), "s/3": ("s/1", "exact")})
    assert out.column("status").to_pylist() == ["kept", "rejected", "rejected"]
    assert out.column("reject_reason").to_pylist() == [None, "exact_duplicate", "image_too_small"]
    assert out.column("dup_of").to_pylist() == [None, "s/1", None]


def test_chains_end_at_a_survivor_and_previous_refresh_wins():
    from curation.dedup.decisions import resolve_chains

    decisions = pa.table(
        {
            "key": ["n/2", "n/3", "n/1", "n/9"],
            "dup_of": ["n/1", "n/2", "old/5", "n/1"],
            "dup_kind": ["exact", "near", "previous_refresh", "semantic"],
        }
    )
    out = resolve_chains(decisions).to_pylist()
    by_key = {r["key"]: (r["dup_of"], r["dup_kind"]) for r in out}
    assert by_key["n/1"] == ("old/5", "previous_refresh")
    assert by_key["n/2"] == ("old/5", "previous_refresh")
    assert by_key["n/3"] == ("old/5", "previous_refresh")
    # A previous-refresh decision's dup_of is an old key: never followed into this run's rows.
    same_name = pa.table({"key": ["k/1", "k/2"], "dup_of": ["k/2", "k/3"], "dup_kind": ["previous_refresh", "exact"]})
    assert resolve_chains(same_name).to_pylist()[0]["dup_of"] == "k/2"


def _random_rows(seed: int, n: int = 400) -> pa.Table:
    import numpy as np

    rng = np.random.default_rng(seed)
    quality = rng.choice([0.1, 0.2, 0.3, np.nan], n).astype(np.float32)  # ties and NaN on purpose
    return pa.table(
        {
            "key": [f"s{i % 7}/{i:05d}" for i in rng.permutation(n)],
            "source": [f"s{i % 7}" for i in range(n)],
            "sha256": [f"h{h}" for h in rng.integers(0, n // 4, n)],
            "clip_score": pa.array(quality, pa.float32()),
            "cluster": rng.integers(0, 5, n),
        }
    )


def test_exact_groups_in_one_block_decide_as_group_by_group():
    import pyarrow.compute as pc

    from curation.dedup.exact import exact_groups

    for seed in range(5):
        rows = _random_rows(seed)
        expected = []
        for sha in set(rows.column("sha256").to_pylist()):
            expected += exact_group_decisions(rows.filter(pc.equal(rows.column("sha256"), sha))).to_pylist()
        found = exact_groups(rows, quality="clip_score", ride_along=False)
        by_key = dict(zip(rows.column("key").to_pylist(), rows.column("source").to_pylist()))
        assert sorted(found.select(["key", "dup_of", "dup_kind"]).to_pylist(), key=str) == sorted(expected, key=str)
        assert all(by_key[d["key"]] == d["source"] for d in found.to_pylist())


def test_copies_ride_to_their_survivors_cluster_and_chains_resolve_there():
    import pyarrow.compute as pc

    from curation.dedup.exact import EXACT_OF, decide_with_copies, exact_groups

    rows = _random_rows(1)
    marked = exact_groups(rows, quality="clip_score", ride_along=True)
    assert marked.num_rows == rows.num_rows
    survivors = marked.filter(pc.is_null(marked.column(EXACT_OF)))
    cluster_of = dict(zip(survivors.column("key").to_pylist(), survivors.column("cluster").to_pylist()))
    for copy in marked.filter(pc.is_valid(marked.column(EXACT_OF))).to_pylist():
        assert copy["cluster"] == cluster_of[copy[EXACT_OF]]

    def first_is_near_copy_of_last(group: pa.Table) -> pa.Table:  # a cluster's own decision about a survivor
        keys = sorted(group.column("key").to_pylist())
        return (
            pa.table({"key": keys[:1], "dup_of": keys[-1:], "dup_kind": ["near"]})
            if len(keys) > 1
            else group.slice(0, 0)
            .select(["key"])
            .append_column("dup_of", pa.array([], pa.string()))
            .append_column("dup_kind", pa.array([], pa.string()))
        )

    for cluster in set(marked.column("cluster").to_pylist()):
        group = marked.filter(pc.equal(marked.column("cluster"), cluster))
        decided = {d["key"]: d for d in decide_with_copies(group, decide=first_is_near_copy_of_last).to_pylist()}
        alive = sorted(group.filter(pc.is_null(group.column(EXACT_OF))).column("key").to_pylist())
        for copy in group.filter(pc.is_valid(group.column(EXACT_OF))).to_pylist():
            target = alive[-1] if len(alive) > 1 and copy[EXACT_OF] == alive[0] else copy[EXACT_OF]
            assert decided[copy["key"]]["dup_of"] == target  # a copy of the near copy points past it
            assert decided[copy["key"]]["dup_kind"] == "exact"


def test_rounds_of_follow_chains_give_what_resolve_chains_gives():
    """Pointer jumping by a shuffle (one block here: every node meets its answer) equals the in-memory
    resolution, previous-refresh ends included."""
    import numpy as np

    from curation.dedup.decisions import as_chain_rows, follow_chains, resolve_chains

    rng = np.random.default_rng(3)
    for _ in range(20):
        n = 60
        rank = rng.permutation(n)  # dup_of always ranks higher: no cycles
        keys = [f"k{i:03d}" for i in range(n)]
        rows = []
        for i in range(n):
            better = [j for j in range(n) if rank[j] > rank[i]]
            if better and rng.random() < 0.6:
                kind = "previous_refresh" if rng.random() < 0.1 else str(rng.choice(["exact", "near", "semantic"]))
                target = f"old{i}" if kind == "previous_refresh" else keys[int(rng.choice(better))]
                rows.append({"key": keys[i], "dup_of": target, "dup_kind": kind, "source": "s"})
        decisions = pa.Table.from_pylist(
            rows, schema=pa.schema([(c, pa.string()) for c in ("key", "dup_of", "dup_kind", "source")])
        )
        expected = sorted(resolve_chains(decisions).to_pylist(), key=lambda r: r["key"])
        current = decisions
        for _ in range(10):
            out = follow_chains(as_chain_rows(current))
            current = out.drop_columns(["moved"])
            if not pa.compute.any(out.column("moved")).as_py():
                break
        assert sorted(current.to_pylist(), key=lambda r: r["key"]) == expected
