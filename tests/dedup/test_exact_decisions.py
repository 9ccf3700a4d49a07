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
