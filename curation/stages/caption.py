"""Caption hygiene and personal data in captions: clean, then boilerplate, then PII.

1. `clean_caption`: HTML entities unescaped, <script>/<style> elements dropped with their content, other
   tags removed, invisible and control characters removed, NFKC, whitespace collapsed.
2. `is_boilerplate`: file names (IMG_1234.jpg, DSC00042, photo (3).png, Screenshot 2021-03-04 at ...) and
   alt-text boilerplate ("image", "click to enlarge", "no description available", ...) are rejected.
3. `find_pii` / `redact`: emails, phone numbers, Luhn-valid card numbers, mod-97-valid IBANs, street
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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Literal

import pyarrow as pa

from curation.config import PII_KINDS
from curation.schema import RejectReason, Stage
from curation.stages.base import BatchStage, apply_rejections, kept_mask, set_column

PiiMode = Literal["redact", "reject", "off"]
PII_MODES = ("redact", "reject", "off")

PLACEHOLDERS = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "credit_card": "[CREDIT_CARD]",
    "iban": "[IBAN]",
    "street_address": "[ADDRESS]",
    "personal_url": "[URL]",
}
# Ties between overlapping matches of equal length go to the earlier kind here.
_PRIORITY = {
    kind: i for i, kind in enumerate(("email", "personal_url", "iban", "credit_card", "phone", "street_address"))
}
assert set(PLACEHOLDERS) == set(PII_KINDS) == set(_PRIORITY)

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


# ---- 3. personal data -------------------------------------------------------------------------------

_DIGIT = re.compile(r"\d")

_EMAIL = re.compile(
    r"(?<![\w.+%-])[\w.+%-]{1,64}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.){1,10}[a-z]{2,24}(?![\w-]|\.[a-z0-9])",
    re.I,
)

# Phones. International: +CC then digit groups; US: (555) 123-4567, 555-123-4567, 1-800-555-0199; European
# national numbers start with the trunk 0: 030 1234567, 06 12 34 56 78, 020 7946 0958, 089/1234567.
# Each is a run of digit groups that must not continue into more digits, and the digit count is checked.
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?[ .-]?\d++(?:[ .-]\d++){0,6}+(?![\w]|[.,-]\d)")
_PHONE_US = re.compile(r"(?<![\w+.,$/-])(?:1[ .-])?(?:\(\d{3}\)[ ]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w]|[.,/-]\d)")
_PHONE_EU = re.compile(r"(?<![\w+.,/:$-])(?:\(0\d{1,4}\)|0\d{1,4})(?:[ /.-]\d{2,8}){1,5}+(?![\w]|[.,:/-]\d)")
_DATE_PREFIX = re.compile(r"\d{1,2}([./-])\d{1,2}\1\d{2,4}(?!\d)")

_CARD = re.compile(r"(?<![\w+.,/$-])(?<!\d[ -])\d(?:[ -]?\d){12,18}(?!-?\d)(?![\w]|[.,/]\d)")
_CARD_SEP = re.compile(r"[ -]")

_IBAN = re.compile(r"(?<![\w-])[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)(?![\w-])")
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

# Street addresses: "221B Baker Street", "1600 Pennsylvania Ave NW", "350 5th Ave" (a number, one to four
# capitalised name words that are not articles or prepositions, a street suffix); German "Hauptstraße 5",
# "Bahnhofstr. 12a", "Berliner Straße 7"; French "12 rue de la Paix", "5, avenue des Champs-Élysées".
_STOPWORD = r"(?:The|A|An|In|On|Of|At|And|Or|To|For|With|By|From|Is|Are|My|Your|Our|Their|His|Her|Its|This|That)\b"
_ADDRESS_EN = re.compile(
    r"(?<![\w.,$/#:+-])\d{1,5}[A-Za-z]?(?:-\d{1,5})?,?[ ]+(?:[NSEW]\.?[ ]+)?"
    rf"(?:(?!{_STOPWORD})(?:[A-Z][\w'’.-]{{0,29}}|\d{{1,3}}(?:st|nd|rd|th))[ ]+){{1,4}}"
    r"(?i:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|parkway"
    r"|pkwy|highway|hwy|square|sq|circle|cir|crescent|close|alley|trail|plaza)\b\.?"
)
_DE_SUFFIX = r"(?:straße|strasse|str\.|weg|allee|platz|gasse|damm|ufer|chaussee)"
_DE_WORD = r"[A-ZÄÖÜ][a-zäöüß]{1,30}[ -]"
_ADDRESS_DE = re.compile(
    rf"(?<![\w-])(?:(?:{_DE_WORD}){{0,3}}[A-ZÄÖÜ][a-zäöüß]{{0,30}}{_DE_SUFFIX}"
    rf"|(?:{_DE_WORD}){{1,3}}(?:Straße|Strasse|Str\.|Weg|Allee|Platz|Gasse|Damm|Ufer|Chaussee))"
    r"[ ]+\d{1,3}[a-z]?(?![\w]|[.,/-]\d)"
)
_ADDRESS_FR = re.compile(
    r"(?<![\w.,$/#:+-])\d{1,4}(?:[ ]?(?:bis|ter|[A-Za-z]))?,?[ ]+"
    r"(?i:rue|avenue|av\.|boulevard|bd|place|allée|allee|impasse|chemin|quai|cours|passage|route|square)[ ]+"
    r"(?:(?i:de|du|des|la|le|les)[ ]+|(?i:d|l)['’])*+[A-ZÀ-ÖØ-Ý][\w'’-]{0,40}"
)

# URLs: a scheme or www., or a bare host followed by a path (so "photo.jpg" is no URL). Whether one names
# a person is decided on its host and path.
_URL = re.compile(
    r"(?<![\w@.%+/-])(?P<scheme>https?://)?(?P<host>(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.){1,10}[a-z]{2,24})"
    r"(?::\d{1,5})?(?P<rest>[/?#][^\s<>\"'`]*)?",
    re.I,
)
_PROFILE_SEGMENTS = frozenset("users user u profile profiles people members member author authors".split())
# Hosts whose first path segment is an account name, and first segments on them that are not one.
_ACCOUNT_HOSTS = frozenset(
    """facebook.com fb.com instagram.com twitter.com x.com github.com gitlab.com tiktok.com threads.net t.me
    vk.com soundcloud.com behance.net dribbble.com deviantart.com pinterest.com tumblr.com""".split()
)
_NOT_ACCOUNTS = frozenset(
    """p reel reels tv explore search hashtag hashtags tag tags home login signup register about help privacy
    terms legal tos policies settings share sharer sharer.php photo.php story.php permalink.php l.php watch video
    videos groups pages events marketplace gaming i intent status topics trending features pricing orgs
    organizations sponsors collections notifications messages compose dialog plugins business ads developers
    download apps blog careers jobs press security site contact static media images img assets cdn api oauth
    discover directory accounts web en pin ideas shots""".split()
)
_PERSONAL_SUBDOMAIN_HOSTS = (".github.io", ".tumblr.com", ".blogspot.com", ".wordpress.com", ".substack.com")
# Query parameters naming a person; a name= value with a dot is a file name (?name=sunset.jpg).
_PERSONAL_QUERY = re.compile(
    r"(?:^|[?&;])(?:(?:e-?mail|email_?address|mail|user|user_?name|user_?id|uid|login|author|profile|member"
    r"|account|handle)=[^&;#\s]|(?:name|first_?name|last_?name|full_?name)=[^&;#\s.]++(?![^&;#\s]))",
    re.I,
)
_URL_TRAILING = ".,;:!?)]}'\""


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_valid(compact: str) -> bool:
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _find_emails(text: str) -> list[tuple[int, int]]:
    if "@" not in text:
        return []
    return [m.span() for m in _EMAIL.finditer(text)]


def _find_phones(text: str) -> list[tuple[int, int]]:
    spans = []
    if "+" in text:
        for m in _PHONE_INTL.finditer(text):
            if 8 <= sum(ch.isdigit() for ch in m.group()) <= 15:
                spans.append(m.span())
    for m in _PHONE_US.finditer(text):
        spans.append(m.span())
    for m in _PHONE_EU.finditer(text):
        digits = sum(ch.isdigit() for ch in m.group())
        if 9 <= digits <= 15 and not _DATE_PREFIX.match(m.group()):
            spans.append(m.span())
    return spans


def _card_valid(groups: list[str], separators: set[str]) -> bool:
    if len(groups) > 1 and (len(separators) > 1 or min(map(len, groups)) < 3):
        return False  # ISBN-like 978-3-16-148410-0, or mixed separators
    digits = "".join(groups)
    return 13 <= len(digits) <= 19 and digits[0] != "0" and len(set(digits)) > 1 and _luhn(digits)


def _find_cards(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in _CARD.finditer(text):
        number = m.group()
        groups, separators = _CARD_SEP.split(number), set(_CARD_SEP.findall(number))
        # A number may have run into a following one ("... 1111 123"): retry without it.
        for n in range(len(groups), 0, -1):
            if _card_valid(groups[:n], separators):
                spans.append((m.start(), m.start() + sum(map(len, groups[:n])) + n - 1))
                break
    return spans


def _iban_shapes(text: str) -> list[tuple[int, int]]:
    """Spans shaped like an IBAN, valid or not: their digits are no phone or card number."""
    return [m.span() for m in _IBAN.finditer(text)]


def _find_ibans(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in _IBAN.finditer(text):
        groups = m.group().split(" ")
        # A spaced IBAN may have swallowed a following word of four capitals: retry without it.
        for n in range(len(groups), 0, -1):
            if _iban_valid("".join(groups[:n])):
                spans.append((m.start(), m.start() + len(" ".join(groups[:n]))))
                break
    return spans


def _find_addresses(text: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in _ADDRESS_EN.finditer(text)]
    spans += [m.span() for m in _ADDRESS_FR.finditer(text)]
    spans += [m.span() for m in _ADDRESS_DE.finditer(text)]
    return spans


def _is_personal_url(host: str, rest: str) -> bool:
    host = host.lower()
    for prefix in ("www.", "m.", "mobile.", "web."):
        if host.startswith(prefix):
            host = host[len(prefix) :]
            break
    path, _, query = rest.partition("#")[0].partition("?")
    segments = [s for s in path.split("/") if s]
    if query and _PERSONAL_QUERY.search("?" + query):
        return True
    if host.endswith(_PERSONAL_SUBDOMAIN_HOSTS):
        return True
    for i, seg in enumerate(segments):
        if len(seg) > 1 and seg[0] in "~@":
            return True
        if seg.lower() in _PROFILE_SEGMENTS and i + 1 < len(segments):
            return True
    if not segments:
        return False
    first = segments[0].lower()
    if host == "linkedin.com" or host.endswith(".linkedin.com"):
        return first in ("in", "pub") and len(segments) > 1
    if host == "flickr.com":
        return first in ("photos", "people") and len(segments) > 1
    if host == "facebook.com" and first == "profile.php":
        return True
    return host in _ACCOUNT_HOSTS and first not in _NOT_ACCOUNTS


def _find_personal_urls(text: str) -> list[tuple[int, int]]:
    if "." not in text:
        return []
    spans = []
    for m in _URL.finditer(text):
        rest = (m.group("rest") or "").rstrip(_URL_TRAILING)
        host = m.group("host")
        if not (m.group("scheme") or host.lower().startswith("www.") or rest):
            continue  # a bare name with a dot: "photo.jpg", "e.g."
        if _is_personal_url(host, rest):
            spans.append((m.start(), m.start("rest") + len(rest) if m.group("rest") is not None else m.end()))
    return spans


_FINDERS = {
    "email": _find_emails,
    "phone": _find_phones,
    "credit_card": _find_cards,
    "iban": _find_ibans,
    "street_address": _find_addresses,
    "personal_url": _find_personal_urls,
}
_NEEDS_DIGIT = frozenset({"phone", "credit_card", "iban", "street_address"})
_NOT_IN_IBANS = frozenset({"phone", "credit_card"})


def _inside(span: tuple[int, int, str], shapes: list[tuple[int, int]]) -> bool:
    return any(start <= span[0] and span[1] <= end for start, end in shapes)


def _check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in _FINDERS]
    if unknown:
        raise ValueError(f"unknown PII kinds {unknown}; choose from {list(PII_KINDS)}")
    return kinds


def find_pii(text: str, kinds: Iterable[str] = PII_KINDS) -> list[tuple[str, int, int]]:
    """Non-overlapping (kind, start, end) spans of personal data in `text`, in text order."""
    kinds = _check_kinds(kinds)
    has_digit = _DIGIT.search(text) is not None
    found = []
    for kind in kinds:
        if kind in _NEEDS_DIGIT and not has_digit:
            continue
        found.extend((start, end, kind) for start, end in _FINDERS[kind](text))
    if not found:
        return []
    if has_digit and any(kind in _NOT_IN_IBANS for _, _, kind in found):
        shapes = _iban_shapes(text)
        if shapes:
            found = [s for s in found if s[2] not in _NOT_IN_IBANS or not _inside(s, shapes)]
    found.sort(key=lambda s: (s[0], s[0] - s[1], _PRIORITY[s[2]]))
    chosen: list[tuple[int, int, str]] = []
    for span in found:
        if chosen and span[0] < chosen[-1][1]:  # overlaps the last one kept: keep the longer
            last = chosen[-1]
            if (span[1] - span[0], -_PRIORITY[span[2]]) > (last[1] - last[0], -_PRIORITY[last[2]]):
                chosen[-1] = span
            continue
        chosen.append(span)
    return [(kind, start, end) for start, end, kind in chosen]


def redact(text: str, kinds: Iterable[str] = PII_KINDS) -> tuple[str, list[str]]:
    """`text` with each piece of personal data replaced by its placeholder, and the sorted kinds found."""
    spans = find_pii(text, kinds)
    if not spans:
        return text, []
    parts, pos = [], 0
    for kind, start, end in spans:
        parts.append(text[pos:start])
        parts.append(PLACEHOLDERS[kind])
        pos = end
    parts.append(text[pos:])
    return "".join(parts), sorted({kind for kind, _, _ in spans})


# ---- the stage --------------------------------------------------------------------------------------


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
        self.pii_kinds = _check_kinds(self.pii_kinds)

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
