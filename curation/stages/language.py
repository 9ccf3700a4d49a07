"""Caption language identification: label every kept row's caption and reject unwanted languages.

The detector is py3langid (langid.py's naive Bayes over byte n-grams; the model ships in the package)
with normalised probabilities, whose softmax is tempered by the caption's length: a few words get a
modest probability, a sentence a confident one. `curate bench language` chose it over
lingua-language-detector: with this stage's rule on short captions it decides right more often
(synthetic 0.994 vs 0.960, hand-written web alt-texts in 9 languages 0.991 vs 0.884: lingua's
confidences on a few words rarely reach min_score), at ~11,000 captions/s on one core instead of ~450,
loading in 0.4 s and ~80 MB instead of ~9 s and ~1.2 GB. Its top-language labels are less exact on
short Spanish (often labelled Galician or Aragonese); the decision pools such neighbours (CONFUSABLE).

`lang` is an ISO 639-1 code where the language has one (py3langid's regional varieties are folded into
their macrolanguage: ary/arz -> ar, yue/wuu -> zh, ...), else the detector's ISO 639-3 code; `zxx`
means no linguistic content. `lang_score` is the probability of that language (0..1). A row is
rejected with `unwanted_language` when `keep` is not empty and its language is confidently one `keep`
does not list: its probability reaches min_score, or that of its group of confusable languages does
(see CONFUSABLE) when no member of the group is kept. Otherwise the row is kept: below min_score the
language counts as unknown, and the row keeps its best guess as its label. `zxx` is never rejected
here (no language at all: the caption rules judge such captions). Empty captions get no label. Rows
rejected upstream are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.errors import UserError
from curation.schema import RejectReason, Stage
from curation.stages.base import Filter, apply_rejections, kept_mask, set_column

NO_LANGUAGE = "zxx"
# py3langid labels folded into one code: regional varieties into their macrolanguage, and the ISO
# 639-3 labels of languages that have an ISO 639-1 code.
FOLD = {
    "ary": "ar",
    "arz": "ar",
    "yue": "zh",
    "wuu": "zh",
    "uzs": "uz",
    "sdh": "ku",
    "fuv": "ff",
    "gug": "gn",
    "kik": "ki",
}
# Every code `language_scores` returns (checked against the model by the tests), so `keep` is checked when the
# stage is built, not in a worker.
KNOWN_CODES = frozenset(
    """ace af am an ar as az ba bcl be bg bn br bs ca crh cs cy da de dz el en eo es et eu ext fa ff fi fo
    fr fy ga gcf gcr gd gl gn gom grc gu guw ha hbo he hi hr ht hu hy id ig is it ja jv ka kab ki kk km kn ko
    ku ky la lb lg lij ln lo lt ltg lv mg mk ml mn mr ms mt my ne nl nn no nso oc om or pa pcm pl ps pt qu ro
    ru rw sa se si sk sl sn so sq sr st sv sw ta te tg th tk tl tr tt ug uk ur uz vec vi vo wa xh yo zh zu
    zxx""".split()
)

# Languages py3langid confuses with each other on a few words (dialect continua, one language in two
# standards): they pool their probability. On short Spanish captions Spanish, Galician and Aragonese
# split it (e.g. es 0.45, gl 0.35, an 0.13), so no single one reaches min_score; the group does.
# A group is only pooled when none of its members is kept. `curate bench language` measures the effect.
_GROUPS = (
    ("es", "pt", "gl", "ca", "an", "ext", "oc"),
    ("it", "lij", "vec"),
    ("fr", "wa", "ht", "gcf", "gcr"),
    ("sv", "no", "nb", "nn", "da"),
    ("de", "lb"),
    ("sr", "hr", "bs"),
    ("cs", "sk"),
    ("bg", "mk"),
    ("ru", "uk", "be"),
    ("ms", "id"),
    ("hi", "mr", "ne", "sa"),
)
CONFUSABLE: dict[str, frozenset[str]] = {code: frozenset(group) for group in _GROUPS for code in group}


def load_detector():
    """py3langid's shipped model with normalised probabilities (~0.5 s and ~80 MB to load)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detector_codes(detector) -> frozenset[str]:
    """Every code `language_scores` can return with this detector."""
    return frozenset(FOLD.get(label, label) for label in detector.labels)


def language_scores(detector, text: str) -> dict[str, float]:
    """Probability of each language code for `text` (labels folded into one code add up)."""
    scores: dict[str, float] = {}
    for label, score in detector.rank(text):
        code = FOLD.get(label, label)
        scores[code] = scores.get(code, 0.0) + score
    return scores


class Judgement(NamedTuple):
    lang: str | None
    score: float | None
    verdict: RejectReason | None


def judge(scores: dict[str, float], keep: tuple[str, ...], min_score: float) -> Judgement:
    """The caption's language, its probability, and whether it is confidently a language `keep` lacks:
    the language alone reaches min_score, or its group of confusable languages (none of them kept) does."""
    lang = max(scores, key=scores.__getitem__)
    score = min(scores[lang], 1.0)
    unwanted = bool(keep) and lang not in keep and lang != NO_LANGUAGE
    if unwanted and score < min_score:
        group = CONFUSABLE.get(lang)
        unwanted = group is not None and group.isdisjoint(keep) and sum(scores.get(c, 0.0) for c in group) >= min_score
    return Judgement(lang, score, RejectReason.UNWANTED_LANGUAGE if unwanted else None)


@dataclass(kw_only=True)
class LanguageFilter(Filter):
    name: ClassVar[Stage] = Stage.LANGUAGE
    reject_reasons: ClassVar[tuple[RejectReason, ...]] = (RejectReason.UNWANTED_LANGUAGE,)
    keep: tuple[str, ...] = ("en",)  # empty: keep every language (rows are still labelled)
    min_score: float = 0.5
    _detector: object | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.keep = tuple(self.keep)
        unknown = [code for code in self.keep if code not in KNOWN_CODES]
        if unknown:
            raise UserError(
                f"language.keep lists {unknown!r}, which the detector does not know: use ISO 639-1 codes such as 'en', 'de'"
            )
        if not 0.0 <= self.min_score <= 1.0:
            raise UserError(f"language.min_score is {self.min_score}: use a probability between 0 and 1")

    def setup(self) -> None:
        if self._detector is None:
            self._detector = load_detector()

    def judge(self, captions: list[str | None]) -> list[Judgement]:
        """One judgement per caption; empty captions get no language and are kept."""
        self.setup()
        return [
            judge(language_scores(self._detector, c), self.keep, self.min_score) if c and c.strip() else _NO_TEXT
            for c in captions
        ]

    def verdicts(self, kept: pa.Table) -> list[RejectReason | None]:
        return [j.verdict for j in self.judge(kept.column("caption").to_pylist())]

    def process_batch(self, table: pa.Table) -> pa.Table:
        """The Filter template, plus the labels: kept rows get lang and lang_score (also those this stage
        rejects); rows rejected upstream keep what they had."""
        n = table.num_rows
        mask = kept_mask(table)
        rows = np.flatnonzero(mask)
        langs: list[str | None] = [None] * n
        scores: list[float | None] = [None] * n
        reasons: list[RejectReason | None] = [None] * n
        if len(rows):
            for i, j in zip(rows, self.judge(table.column("caption").take(rows).to_pylist())):
                langs[i], scores[i], reasons[i] = j
        table = _label(table, "lang", pa.array(langs, pa.string()), mask)
        table = _label(table, "lang_score", pa.array(scores, pa.float32()), mask)
        return apply_rejections(table, reasons, self.name)


_NO_TEXT = Judgement(None, None, None)


def _label(table: pa.Table, name: str, values: pa.Array, mask: np.ndarray) -> pa.Table:
    """`values` on the rows of `mask`; the other rows keep what they had (null if the column is new)."""
    if name in table.column_names and not mask.all():
        values = pc.if_else(pa.array(mask), values, table.column(name).combine_chunks().cast(values.type))
    return set_column(table, name, values)
