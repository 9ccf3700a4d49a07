"""The language stage: labels on kept rows, the Filter template's guarantees, keep/min_score, and the
acceptance bar on a synthetic world's planted non-English captions."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.config import LanguageConfig
from curation.errors import UserError
from curation.schema import RejectReason
from curation.stages.language import (
    CONFUSABLE,
    KNOWN_CODES,
    LanguageFilter,
    detector_codes,
    judge,
    language_scores,
    load_detector,
)

ENGLISH = "stock illustration: two red striped squares, blue background"
GERMAN = "Zwei Kinder spielen Fußball am Strand"
SHORT_SWEDISH = "Sommarrea nu"  # sv ~0.09 ("summer sale now"): too short to be sure
SPANISH_SPLIT = "un rombo negro liso sobre fondo turquesa"  # gl ~0.32, an ~0.23, es ~0.14


@pytest.fixture(scope="module")
def detector():
    return load_detector()


def batch(captions, status=None, reasons=None) -> pa.Table:
    n = len(captions)
    return pa.table(
        {
            "key": [f"s/{i}" for i in range(n)],
            "caption": pa.array(captions, pa.string()),
            "status": status or ["kept"] * n,
            "reject_reason": pa.array(reasons or [None] * n, pa.string()),
            "reject_stage": pa.array([None if r is None else "decode" for r in (reasons or [None] * n)], pa.string()),
        }
    )


def column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist()


def test_built_from_the_config_with_its_defaults():
    stage = LanguageFilter(**LanguageConfig().model_dump())
    assert stage.keep == ("en",) and stage.min_score == 0.5
    assert len(pickle.dumps(stage)) < 1000  # shipped to workers before setup: no model inside


def test_known_codes_are_the_detectors(detector):
    assert detector_codes(detector) == KNOWN_CODES
    assert {"en", "de", "fr", "es", "it", "pt", "nl", "sv", "pl", "zh", "ar", "zxx"} <= KNOWN_CODES
    assert all(code in KNOWN_CODES for code in CONFUSABLE if code != "nb")  # nb: lingua's Bokmål


@pytest.mark.parametrize("keep", [("english",), ("EN",), ("xx",)])
def test_unknown_codes_in_keep_name_the_fix(keep):
    with pytest.raises(UserError, match="ISO 639-1"):
        LanguageFilter(keep=keep)


def test_labels_kept_rows_and_rejects_other_languages():
    captions = [ENGLISH, GERMAN, "Gros plan de fraises fraîches dans un bol en bois"]
    out = LanguageFilter().process_batch(batch(captions))
    assert column(out, "status") == ["kept", "rejected", "rejected"]
    assert column(out, "reject_reason") == [None, "unwanted_language", "unwanted_language"]
    assert column(out, "reject_stage") == [None, "language", "language"]
    assert column(out, "lang") == ["en", "de", "fr"]  # rows this stage rejects carry their language too
    assert out.schema.field("lang_score").type == pa.float32()
    assert all(0.5 <= s <= 1.0 for s in column(out, "lang_score"))
    assert column(out, "caption") == captions and out.num_rows == 3  # rejected rows stay, as they were


def test_rows_rejected_upstream_are_untouched():
    table = batch(
        [GERMAN, GERMAN, None],
        status=["rejected", "kept", "rejected"],
        reasons=["not_an_image", None, "missing_caption"],
    )
    out = LanguageFilter().process_batch(table)
    assert column(out, "status") == ["rejected", "rejected", "rejected"]
    assert column(out, "reject_reason") == ["not_an_image", "unwanted_language", "missing_caption"]
    assert column(out, "reject_stage") == ["decode", "language", "decode"]
    assert column(out, "lang") == [None, "de", None] and column(out, "lang_score")[0] is None
    # columns that exist already keep their values on rows rejected upstream
    labelled = batch([GERMAN, ENGLISH], status=["rejected", "kept"], reasons=["not_an_image", None])
    labelled = labelled.append_column("lang", pa.array(["xx", None], pa.string()))
    labelled = labelled.append_column("lang_score", pa.array([0.25, None], pa.float32()))
    again = LanguageFilter().process_batch(labelled)
    assert column(again, "lang") == ["xx", "en"] and column(again, "lang_score")[0] == 0.25
    assert column(again, "status") == ["rejected", "kept"]


def test_empty_captions_get_no_label_and_are_kept():
    out = LanguageFilter().process_batch(batch(["", "   ", None, ENGLISH]))
    assert column(out, "status") == ["kept"] * 4
    assert column(out, "lang") == [None, None, None, "en"]
    assert column(out, "lang_score")[:3] == [None, None, None]


def test_empty_keep_labels_every_row_and_rejects_none():
    out = LanguageFilter(keep=()).process_batch(batch([ENGLISH, GERMAN, SPANISH_SPLIT]))
    assert column(out, "status") == ["kept"] * 3
    assert column(out, "lang")[:2] == ["en", "de"] and column(out, "lang")[2] is not None


def test_keep_lists_several_languages():
    out = LanguageFilter(keep=("en", "de")).process_batch(
        batch([ENGLISH, GERMAN, "Tulipes rouges dans un vase en verre près de la fenêtre"])
    )
    assert column(out, "status") == ["kept", "kept", "rejected"]


def test_below_min_score_a_language_is_unknown_and_the_row_kept():
    table = batch([SHORT_SWEDISH])
    kept = LanguageFilter().process_batch(table)
    assert column(kept, "status") == ["kept"]
    assert column(kept, "lang") == ["sv"] and column(kept, "lang_score")[0] < 0.5  # the best guess stays as label
    assert column(LanguageFilter(min_score=0.05).process_batch(table), "reject_reason") == ["unwanted_language"]
    assert column(LanguageFilter(min_score=1.0).process_batch(batch([GERMAN])), "status") == ["kept"]


def test_confusable_languages_pool_their_probability(detector):
    scores = language_scores(detector, SPANISH_SPLIT)
    top = max(scores, key=scores.get)
    assert top in CONFUSABLE["es"] and scores[top] < 0.5  # no single language reaches min_score ...
    assert column(LanguageFilter().process_batch(batch([SPANISH_SPLIT])), "reject_reason") == ["unwanted_language"]
    # ... and when a member of the group is kept, the group decides nothing: the caption may be Spanish
    assert column(LanguageFilter(keep=("en", "es")).process_batch(batch([SPANISH_SPLIT])), "status") == ["kept"]


def test_judge_rules():
    reject = RejectReason.UNWANTED_LANGUAGE
    assert judge({"de": 0.6, "en": 0.4}, ("en",), 0.5).verdict == reject
    assert judge({"de": 0.4, "en": 0.3, "fr": 0.3}, ("en",), 0.5).verdict is None
    assert judge({"gl": 0.3, "es": 0.25, "en": 0.2, "fr": 0.25}, ("en",), 0.5) == ("gl", 0.3, reject)  # group: 0.55
    assert judge({"gl": 0.3, "es": 0.25, "en": 0.2, "fr": 0.25}, ("en", "es"), 0.5).verdict is None
    assert judge({"en": 0.45, "gl": 0.3, "es": 0.25}, ("en",), 0.5).verdict is None  # the top language is kept
    assert judge({"en": 0.9, "de": 0.1}, ("en",), 0.5).verdict is None
    assert judge({"zxx": 0.9, "en": 0.1}, ("en",), 0.5) == ("zxx", 0.9, None)  # no language: not judged here
    assert judge({"de": 0.9}, (), 0.5) == ("de", 0.9, None)


def test_regional_varieties_fold_into_their_macrolanguage(detector):
    for text, code in (("مرحبا بكم في موقعنا الرسمي", "ar"), ("佢哋喺度食緊飯", "zh")):
        scores = language_scores(detector, text)
        assert max(scores, key=scores.get) == code and scores[code] > 0.9
        assert not {"ary", "arz", "yue", "wuu"} & set(scores)
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-4)


def test_loads_lazily_and_once():
    stage = LanguageFilter()
    stage.process_batch(batch([ENGLISH]))
    model = stage._detector
    stage.setup()
    assert model is not None and stage._detector is model


def test_rejects_the_planted_non_english_captions_of_a_world(tmp_path):
    from curation.lab.synth import generate

    truth = generate(str(tmp_path), rows=600, seed=5, fmt="parquet", shard_size=300)
    table = pa.concat_tables(
        [pq.read_table(tmp_path / f"{s}.parquet", columns=["key", "caption"]) for s in truth["shards"]]
    )
    keys = [f"{k[:5]}/{k}" for k in column(table, "key")]
    out = LanguageFilter().process_batch(batch(column(table, "caption")))
    rejected = {k for k, reason in zip(keys, column(out, "reject_reason")) if reason == "unwanted_language"}
    planted = {k for k, label in truth["labels"].items() if label == "non_english"}
    assert len(planted) == 18
    hits = len(rejected & planted)
    assert hits / len(rejected) >= 0.9 and hits / len(planted) >= 0.9, (rejected - planted, planted - rejected)
    english = [lang for k, lang in zip(keys, column(out, "lang")) if k not in planted]
    assert np.mean([lang == "en" for lang in english]) >= 0.99


def test_bench_language_compares_and_ends_with_one_json_line():
    import json

    from click.testing import CliRunner

    from curation.cli import main

    result = CliRunner().invoke(main, ["bench", "language", "--n", "20", "--no-lingua"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert "left out (--no-lingua)" in result.output and len(lines) > 20  # the readable table first
    figures = json.loads(lines[-1])
    assert figures["bench"] == "language" and figures["n_synthetic"] == 160 and figures["n_web"] >= 8 * 15
    mine = figures["detectors"]["py3langid"]
    assert mine["web_stage_right"] >= 0.95 and mine["synthetic_stage_right"] >= 0.95
    assert mine["captions_s"] > 0 and figures["ratio"] > 0
