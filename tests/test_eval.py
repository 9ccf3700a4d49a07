"""`curate eval`: precision and recall per defect kind on a hand-made output and truth."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curation.cli import main
from curation.lab.eval import evaluate, read_output, redacted_keys

TRUTH = {
    "rows": 14,
    "labels": {
        "a/0": "clean",
        "a/1": "clean",
        "a/2": "clean",
        "a/3": "clean",
        "a/4": "misaligned",
        "a/5": "misaligned",
        "a/6": "unsafe",
        "a/7": "unsafe",
        "b/0": "exact_duplicate",
        "b/1": "exact_duplicate",
        "b/2": "clean",
        "b/3": "near_duplicate",
        "b/4": "tiny",
        "b/5": "clean",
    },
    "duplicate_groups": [
        {"kind": "exact", "variant": None, "original": "a/0", "copies": ["b/0", "b/1"]},
        {"kind": "near", "variant": "crop", "original": "b/5", "copies": ["b/3"]},
    ],
}
# key -> reject reason (None = kept)
OUTPUT = {
    "a/0": "exact_duplicate",  # the original lost to a copy: fine, one member of the group survives
    "a/1": None,
    "a/2": "low_clip_score",  # a clean row rejected: a false positive of misaligned
    "a/3": None,
    "a/4": "low_clip_score",
    "a/5": None,  # one of two misaligned caught
    "a/6": "unsafe",
    "a/7": "unsafe",
    "b/0": None,
    "b/1": "exact_duplicate",
    "b/2": None,
    "b/3": None,
    "b/4": "image_too_small",
    "b/5": None,  # the near dup missed
}


def write_output(root, rows):
    for status in ("kept", "rejected"):
        part = [(k, r) for k, r in sorted(rows.items()) if (r is None) == (status == "kept")]
        table = pa.table(
            {
                "key": [k for k, _ in part],
                "status": [status] * len(part),
                "reject_reason": pa.array([r for _, r in part], pa.string()),
            }
        )
        (root / status).mkdir(parents=True)
        pq.write_table(table, root / status / "part-00000.parquet")


@pytest.fixture
def output(tmp_path):
    write_output(tmp_path / "out", OUTPUT)
    (tmp_path / "truth.json").write_text(json.dumps(TRUTH))
    return tmp_path


def test_precision_recall_per_kind(output):
    result = evaluate(read_output(str(output / "out")), TRUTH)
    assert result["misaligned"] == {"precision": 0.5, "recall": 0.5, "n": 2}
    assert result["unsafe"] == {"precision": 1.0, "recall": 1.0, "n": 2}
    assert result["exact_duplicate"] == {"precision": 1.0, "recall": 1.0, "n": 2}
    assert result["near_duplicate"] == {"precision": 0.0, "recall": 0.0, "n": 1}
    assert result["tiny"] == {"precision": 1.0, "recall": 1.0, "n": 1}
    assert "watermark" not in result  # neither planted nor predicted
    assert result["clean_rejected"] == pytest.approx(1 / 6, abs=1e-4)  # a/2 only; a/0 lost its group fairly


def test_an_extra_duplicate_rejection_is_a_false_positive():
    rows = {k: ("rejected" if r else "kept", r) for k, r in OUTPUT.items()}
    rows["b/0"] = ("rejected", "exact_duplicate")  # now the whole group is gone
    result = evaluate(rows, TRUTH)
    assert result["exact_duplicate"] == {"precision": pytest.approx(2 / 3, abs=1e-4), "recall": 1.0, "n": 2}


def test_cli_json_and_table(output):
    runner = CliRunner()
    result = runner.invoke(main, ["eval", str(output / "out"), "--truth", str(output / "truth.json"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["unsafe"] == {"precision": 1.0, "recall": 1.0, "n": 2}
    assert set(data) >= {"misaligned", "unsafe", "exact_duplicate", "clean_rejected"}
    table = runner.invoke(main, ["eval", str(output / "out"), "--truth", str(output / "truth.json")])
    assert table.exit_code == 0
    assert "misaligned" in table.output and "clean rows rejected: 16.7 %" in table.output


def test_cli_names_the_fix_for_a_wrong_path(tmp_path):
    result = CliRunner().invoke(main, ["eval", str(tmp_path), "--truth", str(tmp_path / "truth.json")])
    assert result.exit_code == 2 and "truth file" in result.output


def test_planted_personal_data_is_scored_by_the_pii_column(tmp_path):
    truth = {"rows": 4, "labels": {"c/0": "pii_caption", "c/1": "pii_caption", "c/2": "clean", "c/3": "clean"}}
    root = tmp_path / "out"
    for status, keys, pii in (
        ("kept", ["c/0", "c/2", "c/3"], [["email"], ["phone"], []]),
        ("rejected", ["c/1"], [None]),
    ):
        table = pa.table(
            {
                "key": keys,
                "status": [status] * len(keys),
                "reject_reason": pa.array(
                    ["caption_pii"] * len(keys) if status == "rejected" else [None] * len(keys), pa.string()
                ),
                "pii": pa.array(pii, pa.list_(pa.string())),
            }
        )
        (root / status).mkdir(parents=True)
        pq.write_table(table, root / status / "part-00000.parquet")
    found = redacted_keys(str(root))
    assert found == {"c/0", "c/2"}  # c/2: a clean caption with a phone number in it, a false positive
    result = evaluate(read_output(str(root)), truth, found)
    assert result["pii_caption"] == {
        "precision": pytest.approx(2 / 3, abs=1e-4),
        "recall": 1.0,
        "n": 2,
    }  # c/1 rejected for it
    assert "pii_caption" not in evaluate(read_output(str(root)), truth)  # without the column: not scored


def test_outputs_without_a_pii_column_are_not_scored_for_it(output):
    assert redacted_keys(str(output / "out")) is None
