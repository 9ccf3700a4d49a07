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
