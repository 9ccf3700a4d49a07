"""Personal data in captions: `find_pii` and `redact` find emails, phone numbers, Luhn-valid card numbers,
mod-97-valid IBANs, street addresses and URLs that name a person. Each detector is a regex found cheaply
and a Python check of every match (checksum, digit count, URL path); overlapping matches are resolved
longest first. Captions are untrusted: every regex is anchored by a lookbehind that stops it starting
inside a run it could have started at earlier, and every repeat is bounded or possessive, so matching
stays linear in the caption's length. Used by the caption stage (caption.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from curation.config import PII_KINDS

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


def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in _FINDERS]
    if unknown:
        raise ValueError(f"unknown PII kinds {unknown}; choose from {list(PII_KINDS)}")
    return kinds


def find_pii(text: str, kinds: Iterable[str] = PII_KINDS) -> list[tuple[str, int, int]]:
    """Non-overlapping (kind, start, end) spans of personal data in `text`, in text order."""
    kinds = check_kinds(kinds)
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
