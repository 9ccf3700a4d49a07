"""Stages declare the reject reasons they write; the plan collects them. A new stage or head brings its
own reason (any identifier) without editing a central list."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curation.config import load_config
from curation.errors import UserError
from curation.models.info import model_info
from curation.plan import StagePlan
from curation.schema import RejectReason, Stage, reason_name
from curation.stages.base import apply_rejections
from curation.stages.heads import HeadsFilter


def _plan(*overrides: str) -> StagePlan:
    cfg = load_config("pipelines/demo.yaml", list(overrides))
    return StagePlan.build(cfg, model_info(cfg.model))


def test_every_built_in_reason_is_declared_by_the_stage_that_writes_it():
    declared = _plan().reject_reasons()
    everywhere = [reason for reasons in declared.values() for reason in reasons]
    assert set(everywhere) >= {r.value for r in RejectReason} - {"faces"}  # demo.yaml blurs faces, rejects none
    assert "truncated_image" in declared["decode"] and "low_clip_score" in declared["clip"]
    assert declared["read"][0] == "missing_image" and "exact_duplicate" in declared["dedup"]
    assert declared["heads"] == ["unsafe", "watermark", "low_aesthetic"]


def test_a_head_names_its_own_reason():
    overrides = [
        "heads=[{name: watermark, weights: builtin, threshold: 0.5, reason: stock_photo_watermark}]",
    ]
    plan = _plan(*overrides)
    assert plan.reject_reasons()["heads"] == ["stock_photo_watermark"]
    table = pa.table(
        {
            "watermark": pa.array([0.9, 0.1], pa.float32()),
            "status": ["kept", "kept"],
            "reject_reason": pa.array([None, None], pa.string()),
            "reject_stage": pa.array([None, None], pa.string()),
        }
    )
    heads = plan.post[0]
    assert isinstance(heads, HeadsFilter)
    rows = heads.process_batch(table).to_pylist()
    assert [r["reject_reason"] for r in rows] == ["stock_photo_watermark", None]
    assert rows[0]["reject_stage"] == "heads"


@pytest.mark.parametrize("bad", ["Has Space", "UPPER", "", "1starts_with_digit", "x" * 65])
def test_a_reason_must_be_an_identifier(bad):
    with pytest.raises(ValueError, match="identifier"):
        reason_name(bad)
    table = pa.table({"status": ["kept"], "reject_reason": pa.array([None], pa.string()), "reject_stage": ["x"]})
    with pytest.raises(ValueError):
        apply_rejections(table, [bad], Stage.BASIC)
    with pytest.raises(UserError, match="identifier"):
        load_config(
            "pipelines/demo.yaml", [f"heads=[{{name: unsafe, weights: builtin, threshold: 0.5, reason: '{bad}'}}]"]
        )
