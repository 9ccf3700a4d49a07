import math

import numpy as np
import pytest

from curation.config import load_config
from curation.errors import UserError
from curation.stages.clip_filter import threshold_for_keep_fraction


def test_keeps_the_top_fraction():
    scores = np.arange(100, dtype=np.float32) / 100
    t = threshold_for_keep_fraction(scores, 0.3)
    assert (scores >= t).sum() == 30
    assert math.isclose(t, 0.70, abs_tol=1e-6)


def test_rounds_up_ignores_nan_and_is_order_free():
    scores = np.array([0.5, np.nan, 0.1, 0.9, 0.3])
    assert threshold_for_keep_fraction(scores, 0.5) == 0.5  # 2 of the 4 scored rows: 0.9 and 0.5
    assert threshold_for_keep_fraction(scores, 0.6) == 0.3  # ceil(2.4) = 3 rows
    shuffled = np.array([0.9, 0.3, np.nan, 0.5, 0.1])
    assert threshold_for_keep_fraction(shuffled, 0.5) == threshold_for_keep_fraction(scores, 0.5)


def test_edge_cases():
    assert threshold_for_keep_fraction(np.array([]), 0.5) == float("-inf")
    assert threshold_for_keep_fraction(np.array([0.2, 0.4]), 1.0) == 0.2
    assert threshold_for_keep_fraction(np.array([0.2, 0.4]), 0.01) == 0.4
    with pytest.raises(ValueError):
        threshold_for_keep_fraction(np.array([0.2]), 0.0)


def test_ties_keep_every_tied_row():
    scores = np.array([0.5, 0.5, 0.5, 0.1])
    t = threshold_for_keep_fraction(scores, 0.25)
    assert (scores >= t).sum() == 3


def test_config_accepts_keep_fraction():
    assert load_config(None, ["clip.keep_fraction=0.3"]).clip.keep_fraction == 0.3
    with pytest.raises(UserError):
        load_config(None, ["clip.keep_fraction=1.5"])
