"""Caption hygiene and personal data in captions: clean, then boilerplate, then PII.

1. `clean_caption`: HTML entities unescaped, <script>/<style> elements dropped with their content, other
   tags removed, invisible and control characters removed, NFKC, whitespace collapsed.
2. `is_boilerplate`: file names (IMG_1234.jpg, DSC00042, photo (3).png, Screenshot 2021-03-04 at ...) and
   alt-text boilerplate ("image", "click to enlarge", "no description available", ...) are rejected.
3. `find_pii` / `redact` (pii.py): emails, phone numbers, Luhn-valid card numbers, mod-97-valid IBANs, street
   addresses and URLs that name a person. Each detector is a regex found cheaply and a Python check of
   every match (checksum, digit count, URL path); overlapping matches are resolved longest first.

Captions are untrusted. Every regex is anchored by a lookbehind that stops it starting inside a run it
could have started at earlier, and every repeat is bounded or possessive, so matching stays linear in
the caption's length (a 200 KB adversarial caption takes milliseconds).
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from typing import ClassVar, Literal

import pyarrow as pa

from curation.config import PII_KINDS
from curation.schema import RejectReason, Stage
from curation.stages.base import BatchStage, apply_rejections, kept_mask, set_column
from curation.stages.pii import PLACEHOLDERS, check_kinds, find_pii, redact  # noqa: F401 - re-exported

PiiMode = Literal["redact", "reject", "off"]
PII_MODES = ("redact", "reject", "off")


PII_TYPE = pa.list_(pa.string())

# ---- 1. hygiene -------------------------------------------------------------------------------------

_ASCII_DIRTY = re.compile(r"[<&\x00-\x1f\x7f]")
_RAWTEXT_OPEN = re.compile(r"<(script|style)\b[^<>]*>", re.I)
_RAWTEXT_CLOSE = {"script": re.compile(r"</script\s*>", re.I), "style": re.compile(r"</style\s*>", re.I)}
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
# Tags that separate words when rendered become a space; inline ones (<b>, <a>, <span>) vanish.
_BLOCK_TAG = re.compile(
    r"</?(?:br|p|div|li|ul|ol|dl|dt|dd|tr|td|th|thead|tbody|table|caption|h[1-6]|hr|img|blockquote|pre|center"
    r"|section|article|header|footer|nav|aside|main|figure|figcaption|address|iframe|video|audio|source|picture"
    r"|option|select|textarea|button|input|label|form)\b[^<>]*>",
    re.I,
)
_TAG = re.compile(r"</?[a-z][\w:.-]*(?:\s[^<>]*)?/?>|<![^<>]*>|<\?[^<>]*>", re.I)
# Controls (tab/newline/... are whitespace and collapse below), soft hyphen, invisible fillers, zero-width
# space, bidi marks/embeddings/overrides/isolates, word joiner, invisible operators, BOM, interlinear
# annotation marks, and lone surrogates. ZWNJ/ZWJ are handled apart: they are part of correct text in
# Persian, Indic scripts and emoji sequences, so only those not between two visible characters go.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180e"
    "\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\u3164\ufeff\uffa0\ufff9-\ufffb\ud800-\udfff]+"
)
_LOOSE_JOINER = re.compile(r"(?<!\S)[\u200c\u200d]+|[\u200c\u200d]+(?!\S)")


def _drop_raw_text(text: str) -> str:
    """Drop <script>/<style> elements with their content; an unclosed one runs to the end."""
    parts, pos = [], 0
    while (opening := _RAWTEXT_OPEN.search(text, pos)) is not None:
        parts.append(text[pos : opening.start()])
        closing = _RAWTEXT_CLOSE[opening.group(1).lower()].search(text, opening.end())
        if closing is None:
            return "".join(parts)
        pos = closing.end()
    parts.append(text[pos:])
    return "".join(parts)


def clean_caption(text: str) -> str:
    """The caption as a reader sees it: no markup, no invisible characters, NFKC, single spaces."""
    if text.isascii() and _ASCII_DIRTY.search(text) is None:
        return " ".join(text.split())
    if "&" in text:
        text = html.unescape(text)
        if "&" in text:  # scraped alt text is often escaped twice (&amp;quot;)
            text = html.unescape(text)
    if "<" in text:
        text = _drop_raw_text(text)
        text = _COMMENT.sub(" ", text)
        text = _BLOCK_TAG.sub(" ", text)
        text = _TAG.sub("", text)
    text = _INVISIBLE.sub("", text)
    text = unicodedata.normalize("NFKC", text)
    text = _LOOSE_JOINER.sub("", text)
    return " ".join(text.split())


# ---- 2. boilerplate ---------------------------------------------------------------------------------

_MAX_BOILERPLATE_CHARS = 200  # longer captions are never boilerplate; bounds every regex below
_MAX_BOILERPLATE_WORDS = 10
_IMAGE_EXT = r"\.(?:jpe?g|jpe|jfif|png|gif|webp|bmp|tiff?|heic|heif|avif|svg|ico|raw|cr2|nef|arw|dng|psd|exr)"
_FILE_NAME = re.compile(rf"(?:\S{{1,200}}|[^\s/\\]{{1,100}}(?: [^\s/\\]{{1,100}}){{1,2}}){_IMAGE_EXT}", re.I)
_FILE_STEM = re.compile(
    r"""
    (?:img|image|photo|pic|picture|file|untitled|unnamed|download|thumb|thumbnail|scan|snapshot|capture|foto|bild)
        [_ -]?\(?\d+\)?(?:[_ -]\d+)*(?:[_ -](?:edit(?:ed)?|copy|hdr|bw|final|\d+))*
  | (?:_?img|_?mg|dsc[fin]?|dcim|imag|pict|sam|gopr|gp|dji|vid|mvimg|pxl|wp|cimg|hpim|kif|mov|p)
        [_ -]?\d{4,}(?:[_ -]\d+)*(?:[_ -](?:edit(?:ed)?|copy|hdr|bw|burst\w*|portrait|cover|mp|\d+))*
  | screen[ _-]?shot(?:[ _-]*\d[\d :._-]*)?(?:at[ _-]*\d[\d :._-]*)?(?:[ap]\.?m\.?)?(?:[ _-]\w+)?(?:[ ]?\(\d+\))?
  | \d{8}[_ -]\d{4,9}(?:[_ -]\w+)?
  | [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}
  | [0-9a-f]{24,}
    """,
    re.I | re.X,
)
_EXT_SUFFIX = re.compile(rf"{_IMAGE_EXT}\Z", re.I)
_NON_WORD = re.compile(r"[\W_]+")
# A caption made only of these words, with at least one of the first set, says nothing about the image.
_BOILERPLATE_CORE = frozenset(
    """image images img imgs photo photos photograph photographs pic pics picture pictures foto fotos bild bilder
    imagen imagem immagine thumbnail thumbnails thumb thumbs placeholder untitled click tap enlarge zoom loading
    spacer screenshot alt null none undefined nan description caption blank dummy logo icon banner avatar""".split()
)
_BOILERPLATE_FILLER = frozenset(
    """here to for the a an of this that it on in at by via or and with is be will has been view viewing larger
    large bigger big full size sized fullsize version more see details detail no not available unavailable found
    missing please open new window tab gallery product main featured feature stock cover hero header preview
    sample default my your our text provided yet coming soon error broken link title file attachment media item
    slide figure fig page post content upload uploaded empty display show next previous prev back close original
    high resolution res hi low quality hd small medium profile user tag button added shortly removed deleted
    source video play watch read download share pin save enter insert add expand magnify jpg jpeg png gif webp
    x""".split()
)
_BOILERPLATE_PHRASES = frozenset({"n a", "na", "tbd", "todo", "test", "temp", "asdf", "xxx", "no alt", "alt text"})


def _boilerplate_words(norm: str) -> bool:
    words = norm.split()
    if len(words) > _MAX_BOILERPLATE_WORDS:
        return False
    if not any(w in _BOILERPLATE_CORE for w in words):
        return False
    return all(w in _BOILERPLATE_CORE or w in _BOILERPLATE_FILLER or w.isdigit() for w in words)


def is_boilerplate(text: str) -> bool:
    """True for a caption that is a file name or alt-text boilerplate; an empty caption is not (the
    length rule handles it), and neither is a caption that merely contains such words."""
    text = text.strip()
    if not text or len(text) > _MAX_BOILERPLATE_CHARS or text.count(" ") > _MAX_BOILERPLATE_WORDS:
        return False
    if _FILE_NAME.fullmatch(text):
        return True
    stem = _EXT_SUFFIX.sub("", text)
    if _FILE_STEM.fullmatch(stem):
        return True
    norm = " ".join(_NON_WORD.sub(" ", text.casefold()).split())
    return bool(norm) and (norm in _BOILERPLATE_PHRASES or _boilerplate_words(norm))


@dataclass(kw_only=True)
class CaptionStage(BatchStage):
    """Clean captions, reject boilerplate, and redact or reject personal data, on rows still kept.

    Kept rows get the cleaned (and, with pii=redact, redacted) caption and a `pii` list of the kinds
    found (empty: none). Rows this stage rejects, and rows rejected before it (a duplicate key, a missing
    image), keep the caption they came with unless it holds personal data: with pii=redact or reject, no
    caption leaves this stage with personal data in it, whatever the row's fate (their caption is then the
    cleaned, redacted text, and `pii` lists the kinds). `pii` is null where nothing was looked for (pii=off).
    """

    name: ClassVar[Stage] = Stage.CAPTION
    reject_reasons: ClassVar[tuple[RejectReason, ...]] = (
        RejectReason.BOILERPLATE_CAPTION,
        RejectReason.CAPTION_PII,
    )
    clean: bool = True
    reject_boilerplate: bool = True
    pii: PiiMode = "redact"
    pii_kinds: tuple[str, ...] = PII_KINDS

    def __post_init__(self) -> None:
        if self.pii not in PII_MODES:
            raise ValueError(f"caption.pii must be one of {list(PII_MODES)}, got {self.pii!r}")
        self.pii_kinds = check_kinds(self.pii_kinds)

    def process_batch(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        captions = table.column("caption").to_pylist()
        pii: list[list[str] | None] = [None] * n
        reasons: list[RejectReason | None] = [None] * n
        kept = kept_mask(table)
        for i in range(n):
            if kept[i]:
                reasons[i], captions[i], pii[i] = self._examine(captions[i])
            elif self.pii != "off" and captions[i] is not None:
                captions[i], pii[i] = self._without_pii(captions[i])
        caption_type = table.schema.field("caption").type
        table = set_column(table, "caption", pa.array(captions, type=caption_type))
        table = set_column(table, "pii", pa.array(pii, type=PII_TYPE))
        return apply_rejections(table, reasons, self.name)

    def _examine(self, raw: str | None) -> tuple[RejectReason | None, str | None, list[str] | None]:
        """(reject reason, caption to store, pii kinds) for one kept row."""
        looks = self.pii != "off"
        if raw is None:
            return None, None, [] if looks else None
        text = clean_caption(raw) if self.clean else raw
        if self.reject_boilerplate and is_boilerplate(text):
            return RejectReason.BOILERPLATE_CAPTION, *(self._without_pii(raw) if looks else (raw, None))
        if not looks:
            return None, text, None
        if self.pii == "redact":
            redacted, kinds = redact(text, self.pii_kinds)
            return None, redacted, kinds
        kinds = sorted({kind for kind, _, _ in find_pii(text, self.pii_kinds)})
        return (RejectReason.CAPTION_PII, *self._without_pii(raw)) if kinds else (None, text, kinds)

    def _without_pii(self, raw: str) -> tuple[str, list[str]]:
        """(caption to store, pii kinds) for a rejected row: the caption it came with when that holds no
        personal data, else the cleaned caption, redacted. Personal data is looked for in both the raw and
        the cleaned text (an address may hide in markup, or behind an HTML entity)."""
        cleaned = clean_caption(raw)
        redacted, kinds = redact(cleaned, self.pii_kinds)
        if find_pii(raw, self.pii_kinds):
            kinds = sorted({*kinds, *(kind for kind, _, _ in find_pii(raw, self.pii_kinds))})
        return (redacted, kinds) if kinds else (raw, kinds)
