"""Acceptance: on a world from a seed the shipped model never saw, the shipped CLIP and heads catch
misaligned captions, the unsafe motif, watermarks and non-English captions with precision and recall >= 0.9 each, while at
most 5 % of clean rows are rejected. Runs the score phase's stages directly (no Ray), with the
settings of pipelines/demo.yaml.
"""

from __future__ import annotations

import pytest

from curation.lab.eval import evaluate

UNSEEN_SEED = 4242  # train-clip renders from seed 0 (and held-out pairs from 1_000_003)


@pytest.fixture(scope="module")
def scored_world(score_unseen_world):
    truth, (keys, statuses, reasons) = score_unseen_world(UNSEEN_SEED, 1200, 400, ("key", "status", "reject_reason"))
    return evaluate({key: (status, reason) for key, status, reason in zip(keys, statuses, reasons)}, truth)


@pytest.mark.parametrize("kind", ["misaligned", "unsafe", "watermark", "non_english"])
def test_filters_reach_the_bar(scored_world, kind):
    m = scored_world[kind]
    assert m["n"] >= 30
    assert m["precision"] >= 0.9 and m["recall"] >= 0.9, (kind, m)


def test_few_clean_rows_are_rejected(scored_world):
    # without the dedup phase here, duplicate copies stay kept: they are not clean rows, so no effect
    assert scored_world["clean_rejected"] <= 0.05, scored_world
