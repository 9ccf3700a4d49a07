"""`curate train-head` fits a head from labelled Parquet; the pipeline then uses it by path."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from curation.cli import main
from curation.lab.synth import generate
from curation.models.heads import head_info, load_head


def test_train_head_from_a_synthetic_world_and_from_a_label_column(tmp_path):
    truth = generate(str(tmp_path / "world"), rows=300, seed=9, fmt="parquet", shard_size=150)
    out = tmp_path / "unsafe.safetensors"
    result = CliRunner().invoke(
        main,
        [
            "train-head",
            "--name",
            "unsafe",
            "--data",
            str(tmp_path / "world"),
            "--truth",
            str(tmp_path / "world" / "truth.json"),
            "--output",
            str(out),
            "--set",
            "model.threads=1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "held-out precision" in result.output
    head = load_head(out)
    assert head.features == ("embedding", "tokens", "stem")
    assert head_info(out)["name"] == "unsafe" and head_info(out)["positive"] == "unsafe"

    # the same rows with a boolean label column
    table = pq.read_table(tmp_path / "world" / "00000.parquet")
    labels = [truth["labels"][f"00000/{k}"] == "unsafe" for k in table.column("key").to_pylist()]
    pq.write_table(table.append_column("is_unsafe", pa.array(labels)), tmp_path / "labelled.parquet")
    second = CliRunner().invoke(
        main,
        [
            "train-head",
            "--name",
            "unsafe",
            "--data",
            str(tmp_path / "labelled.parquet"),
            "--label-column",
            "is_unsafe",
            "--output",
            str(tmp_path / "b.safetensors"),
            "--set",
            "model.threads=1",
            "--hidden",
            "32,8",
        ],
    )
    assert second.exit_code == 0, second.output
    assert load_head(tmp_path / "b.safetensors").hidden == (32, 8)  # an MLP of any layer sizes


def test_train_head_names_the_fix_for_a_missing_label(tmp_path):
    generate(str(tmp_path / "world"), rows=20, seed=9, fmt="parquet", shard_size=20)
    result = CliRunner().invoke(
        main,
        [
            "train-head",
            "--name",
            "unsafe",
            "--data",
            str(tmp_path / "world"),
            "--label-column",
            "nope",
            "--output",
            str(tmp_path / "h.safetensors"),
        ],
    )
    assert result.exit_code == 2 and "nope" in result.output
