import time

import pyarrow as pa
import pytest

from curation.config import PII_KINDS, CaptionConfig
from curation.schema import RejectReason, Stage
from curation.stages.caption import CaptionStage, clean_caption, find_pii, is_boilerplate, redact

# ---- personal data: (caption, kinds found, redacted caption) --------------------------------------------

PII_CASES = [
    # email
    ("Contact john.doe@example.com for prints", ["email"], "Contact [EMAIL] for prints"),
    ("mail: Jane_O+tag@mail.example.co.uk.", ["email"], "mail: [EMAIL]."),
    # phone: international, US, European groupings
    ("Call +1 (555) 123-4567 today", ["phone"], "Call [PHONE] today"),
    ("Ring +44 20 7946 0958 now", ["phone"], "Ring [PHONE] now"),
    ("Tel +4915112345678", ["phone"], "Tel [PHONE]"),
    ("Standort Berlin, +49 30 12345678", ["phone"], "Standort Berlin, [PHONE]"),
    ("Bureau +33 1 23 45 67 89", ["phone"], "Bureau [PHONE]"),
    ("UK office +44 (0)20 7946 0958", ["phone"], "UK office [PHONE]"),
    ("Call (555) 123-4567 today", ["phone"], "Call [PHONE] today"),
    ("Call 555-123-4567 or 555.765.4321", ["phone"], "Call [PHONE] or [PHONE]"),
    ("toll free 1-800-555-0199", ["phone"], "toll free [PHONE]"),
    ("Tel. 030 12345678", ["phone"], "Tel. [PHONE]"),
    ("Appelez le 06 12 34 56 78", ["phone"], "Appelez le [PHONE]"),
    ("phone 020 7946 0958", ["phone"], "phone [PHONE]"),
    ("Praxis 089/1234567", ["phone"], "Praxis [PHONE]"),
    # credit cards: Luhn-valid only
    ("card 4111 1111 1111 1111 exp 12/25", ["credit_card"], "card [CREDIT_CARD] exp 12/25"),
    ("card 5500-0000-0000-0004", ["credit_card"], "card [CREDIT_CARD]"),
    ("amex 378282246310005", ["credit_card"], "amex [CREDIT_CARD]"),
    # IBANs: mod-97 valid only
    ("IBAN DE89 3704 0044 0532 0130 00 thanks", ["iban"], "IBAN [IBAN] thanks"),
    ("pay to GB82WEST12345698765432", ["iban"], "pay to [IBAN]"),
    ("FR14 2004 1010 0505 0001 3M02 606", ["iban"], "[IBAN]"),
    # street addresses
    ("we live at 221B Baker Street, London", ["street_address"], "we live at [ADDRESS], London"),
    ("1600 Pennsylvania Avenue NW", ["street_address"], "[ADDRESS] NW"),
    ("shop at 350 5th Ave, New York", ["street_address"], "shop at [ADDRESS], New York"),
    ("No. 10 Downing St. at night", ["street_address"], "No. [ADDRESS] at night"),
    ("42 Wallaby Way, Sydney", ["street_address"], "[ADDRESS], Sydney"),
    ("Hauptstraße 5, Berlin", ["street_address"], "[ADDRESS], Berlin"),
    ("Bahnhofstr. 12a in Köln", ["street_address"], "[ADDRESS] in Köln"),
    ("Karl-Marx-Straße 5", ["street_address"], "[ADDRESS]"),
    ("Berliner Straße 7", ["street_address"], "[ADDRESS]"),
    ("Café au 12 rue de la Paix, Paris", ["street_address"], "Café au [ADDRESS], Paris"),
    ("5, avenue des Champs-Élysées", ["street_address"], "[ADDRESS]"),
    # personal URLs
    ("see https://www.facebook.com/john.smith.", ["personal_url"], "see [URL]."),
    ("by instagram.com/jane_doe", ["personal_url"], "by [URL]"),
    ("https://twitter.com/jdoe/status/123", ["personal_url"], "[URL]"),
    ("follow x.com/jdoe", ["personal_url"], "follow [URL]"),
    ("(https://www.linkedin.com/in/jane-doe-123/)", ["personal_url"], "([URL])"),
    ("code at github.com/torvalds", ["personal_url"], "code at [URL]"),
    ("http://example.edu/~jsmith/photos/cat.jpg", ["personal_url"], "[URL]"),
    ("https://example.com/users/alice/uploads/1.jpg", ["personal_url"], "[URL]"),
    ("https://forum.example.com/u/bob", ["personal_url"], "[URL]"),
    ("https://example.com/profile/123 cat", ["personal_url"], "[URL] cat"),
    ("https://example.com/gallery?user=alice&id=3", ["personal_url"], "[URL]"),
    ("https://example.com/view?first_name=Jane&last_name=Doe", ["personal_url"], "[URL]"),
    ("https://jane.github.io/cat.png", ["personal_url"], "[URL]"),
    # several kinds at once, sorted
    (
        "Photo: jane@example.co.uk, 221B Baker Street, +44 20 7946 0958",
        ["email", "phone", "street_address"],
        "Photo: [EMAIL], [ADDRESS], [PHONE]",
    ),
    # look-alikes that are not personal data
    ("taken 2021-03-04 at 10:22:11", [], None),
    ("on 04.03.2021 in Paris", [], None),
    ("archive 1990-2020", [], None),
    ("1920x1080 wallpaper", [], None),
    ("only $1,299.99 today", [], None),
    ("python 3.10.4 release", [], None),
    ("ISBN 978-3-16-148410-0", [], None),
    ("ISBN 0-306-40615-2 and 9783161484100", [], None),
    ("card 1234 5678 9012 3456", [], None),  # 16 digits, not Luhn-valid
    ("IBAN DE89 3704 0044 0532 0130 01", [], None),  # bad check digits
    ("GB00WEST12345698765432", [], None),
    ("walking down Main Street", [], None),
    ("Route 66 road sign", [], None),
    ("3 dogs on the way home", [], None),
    ("5 Kids Playing In The Street", [], None),
    ("Spring 2021 collection", [], None),
    ("https://example.com/images/cat.jpg", [], None),
    ("example.com/images/cat.jpg", [], None),
    ("https://github.com/features and https://example.com/gallery?id=3", [], None),
    ("https://cdn.example.com/img?name=sunset.jpg&w=640", [], None),
    ("model WH-1000XM4, part no. 12-3456-78, SKU 99-123", [], None),
    ("server 192.168.100.10 version 2.0.1.12345", [], None),
    ("order #123456789 of 42 items", [], None),
    ("the photo.jpg file, e.g. a cat", [], None),
]


@pytest.mark.parametrize(("text", "kinds", "redacted"), PII_CASES, ids=[c[0][:40] for c in PII_CASES])
def test_pii_detection_and_redaction(text, kinds, redacted):
    assert sorted({kind for kind, _, _ in find_pii(text)}) == kinds
    out, found = redact(text)
    assert found == kinds
    assert out == (text if redacted is None else redacted)


def test_pii_spans_are_ordered_and_disjoint():
    text = "a@b.co +1 555 123 4567 https://x.com/a DE89370400440532013000 card 4111111111111111 9 Elm Street"
    spans = find_pii(text)
    assert [k for k, _, _ in spans] == ["email", "phone", "personal_url", "iban", "credit_card", "street_address"]
    assert all(a[2] <= b[1] for a, b in zip(spans, spans[1:]))
    assert [text[s:e] for _, s, e in spans][-1] == "9 Elm Street"


def test_only_requested_kinds_are_looked_for():
    text = "mail jane@example.com or call 555-123-4567"
    assert redact(text, ("phone",)) == ("mail jane@example.com or call [PHONE]", ["phone"])
    assert redact(text, ()) == (text, [])
    with pytest.raises(ValueError, match="unknown PII kinds"):
        find_pii(text, ("ssn",))


def test_a_url_holding_an_email_is_one_personal_url():
    assert redact("https://example.com/share?email=jane@example.com done") == ("[URL] done", ["personal_url"])


# ---- hygiene --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("<b>Bold</b> red dress", "Bold red dress"),
        ("line one<br/>line two<p>three</p>", "line one line two three"),
        ('<a href="https://example.com/x">a link</a> here', "a link here"),
        ("<script>alert('x')</script>A cat<style>p { color: red }</style>", "A cat"),
        ("<SCRIPT type=text/javascript>never shown", ""),  # an unclosed script runs to the end
        ("&lt;b&gt;escaped&lt;/b&gt; tags", "escaped tags"),
        ("Tom &amp; Jerry &copy; 2020 &#8211; &#x263A;", "Tom & Jerry © 2020 – ☺"),
        ("&amp;quot;twice escaped&amp;quot;", '"twice escaped"'),
        ("x < y and z > w, I <3 cats", "x < y and z > w, I <3 cats"),
        ("<!-- hidden -->visible", "visible"),
        ("ＦＵＬＬ－ｗｉｄｔｈ ｃａｔ ①", "FULL-width cat 1"),
        ("zero\u200bwidth\ufeff\u2060 text\u00ad", "zerowidth text"),
        ("  lots \t of\n\n space\u00a0\u3000here  ", "lots of space here"),
        ("ctrl\x00\x07\x1b chars\x7f", "ctrl chars"),
        ("family 👨\u200d👩\u200d👧, ZWJ at end\u200d \u200dx", "family 👨\u200d👩\u200d👧, ZWJ at end x"),
        ("مرحبا \u200fبالعالم \u202eevil", "مرحبا بالعالم evil"),
        ("a red circle on blue", "a red circle on blue"),
    ],
)
def test_clean_caption(raw, clean):
    assert clean_caption(raw) == clean


# ---- boilerplate ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caption", "boilerplate"),
    [
        ("IMG_1234.jpg", True),
        ("IMG_1234", True),
        ("DSC00042", True),
        ("DSCF0042.JPG", True),
        ("photo (3).png", True),
        ("image001", True),
        ("PXL_20210304_102211123.jpg", True),
        ("20210304_102211", True),
        ("Screenshot 2021-03-04 at 10.22.11", True),
        ("Screen Shot 2021-03-04 at 10.22.11 AM", True),
        ("/uploads/2021/03/banner-final.webp", True),
        ("image", True),
        ("Photo", True),
        ("PICTURE!", True),
        ("untitled", True),
        ("Untitled-1", True),
        ("click here", True),
        ("Click to enlarge", True),
        ("click here to view larger image", True),
        ("No description available.", True),
        ("thumbnail", True),
        ("placeholder", True),
        ("Default Image", True),
        ("loading...", True),
        ("n/a", True),
        ("Image 3 of 12", True),
        ("product photo", True),
        ("a photo of a dog on the beach", False),
        ("click beetle on a leaf", False),
        ("Photo by Jane Smith", False),
        ("Sunset over the bay at dusk.jpg", False),
        ("Image Comics cover art", False),
        ("The big picture of the economy", False),
        ("Rocky (1976)", False),
        ("Spring 2021", False),
        ("a red circle on blue", False),
        ("", False),
        ("...", False),  # empty after normalising: left to the length rule
    ],
)
def test_is_boilerplate(caption, boilerplate):
    assert is_boilerplate(caption) is boilerplate


# ---- untrusted captions ---------------------------------------------------------------------------------

ADVERSARIAL = [
    "a" * 200_000,
    "a@" * 100_000,
    "a." * 100_000,
    "x@a-" * 50_000,
    "1 " * 100_000,
    "1" * 200_000,
    "+1 " * 66_666,
    "00 " * 66_666,
    "(0" * 100_000,
    "4111 " * 40_000,
    "AB12 " * 40_000,
    "12 Aa " * 33_333,
    "12 rue de " * 20_000,
    "Abstr. " * 28_000,
    "<script" * 28_000,
    "<script>" * 25_000,
    "<a " * 66_666,
    "<!--" * 50_000,
    "&amp;" * 40_000,
    "http://" * 28_000,
    "https://facebook.com/" + "a/" * 100_000,
    "https://a.com/?" + "user=&" * 30_000,
    "Screenshot " + "1 " * 100_000,
    "\u200d " * 100_000,
    "😀" * 100_000,
    "ابجد " * 40_000,
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=[repr(t[:12]) for t in ADVERSARIAL])
def test_adversarial_captions_finish_quickly(text):
    start = time.perf_counter()
    cleaned = clean_caption(text)
    is_boilerplate(cleaned)
    redact(cleaned)
    assert time.perf_counter() - start < 1.0


def test_a_megabyte_caption_with_everything():
    text = "<b>Cat</b> &amp; dog, mail a@b.co or +1 555 123 4567 at 9 Elm Street 😀 مرحبا\u200b " * 14_000
    assert len(text) > 1_000_000
    out, kinds = redact(clean_caption(text))
    assert kinds == ["email", "phone", "street_address"]
    assert out.count("[PHONE]") == 14_000 and "@" not in out


# ---- the stage on Arrow tables --------------------------------------------------------------------------


def batch(captions, status=None, reasons=None):
    n = len(captions)
    return pa.table(
        {
            "key": [f"s/{i}" for i in range(n)],
            "source": ["s"] * n,
            "url": [None] * n,
            "caption": pa.array(captions, pa.string()),
            "image": pa.array([b"x"] * n, pa.binary()),
            "status": status or ["kept"] * n,
            "reject_reason": reasons or [None] * n,
            "reject_stage": [None if r is None else "decode" for r in (reasons or [None] * n)],
        }
    )


CAPTIONS = [
    "<b>A red</b> circle &amp; a square",  # cleaned, kept
    "IMG_1234.jpg",  # boilerplate
    "call me at 555-123-4567",  # PII
    "   ",  # empty after cleaning: left to the length rule
    "mail a@b.co",  # already rejected upstream: untouched
    None,  # already rejected with no caption
]
STATUS = ["kept", "kept", "kept", "kept", "rejected", "rejected"]
REASONS = [None, None, None, None, "not_an_image", "missing_caption"]


def test_stage_is_built_from_the_config():
    stage = CaptionStage(**CaptionConfig().model_dump())
    assert (stage.clean, stage.reject_boilerplate, stage.pii, stage.pii_kinds) == (True, True, "redact", PII_KINDS)
    assert stage.name is Stage.CAPTION
    with pytest.raises(ValueError):
        CaptionStage(pii="mask")
    with pytest.raises(ValueError):
        CaptionStage(pii_kinds=("ssn",))


def test_stage_redacts_by_default():
    table = batch(CAPTIONS, STATUS, REASONS)
    out = CaptionStage().process_batch(table)
    assert out.num_rows == table.num_rows
    assert out.column("key").to_pylist() == table.column("key").to_pylist()
    assert out.column("caption").to_pylist() == [
        "A red circle & a square",
        "IMG_1234.jpg",
        "call me at [PHONE]",
        "",
        "mail [EMAIL]",  # rejected before this stage, and still no personal data leaves it
        None,
    ]
    assert out.column("status").to_pylist() == ["kept", "rejected", "kept", "kept", "rejected", "rejected"]
    assert out.column("reject_reason").to_pylist() == [
        None,
        RejectReason.BOILERPLATE_CAPTION.value,
        None,
        None,
        "not_an_image",
        "missing_caption",
    ]
    assert out.column("reject_stage").to_pylist() == [None, "caption", None, None, "decode", "decode"]
    assert out.schema.field("pii").type == pa.list_(pa.string())
    assert out.column("pii").to_pylist() == [[], [], ["phone"], [], ["email"], None]
    for name in ("source", "url", "image"):
        assert out.column(name).equals(table.column(name))


def test_stage_rejects_pii_when_asked():
    table = batch(CAPTIONS, STATUS, REASONS)
    out = CaptionStage(pii="reject").process_batch(table)
    assert out.num_rows == table.num_rows
    captions = out.column("caption").to_pylist()
    # the rejected row's caption is stored redacted: personal data reaches no output, whatever the row's fate
    assert captions == ["A red circle & a square", "IMG_1234.jpg", "call me at [PHONE]", "", "mail [EMAIL]", None]
    assert out.column("reject_reason").to_pylist()[:4] == [
        None,
        RejectReason.BOILERPLATE_CAPTION.value,
        RejectReason.CAPTION_PII.value,
        None,
    ]
    assert out.column("pii").to_pylist() == [[], [], ["phone"], [], ["email"], None]
    assert out.column("reject_reason").to_pylist()[4:] == ["not_an_image", "missing_caption"]


def test_stage_with_pii_off_leaves_pii_null():
    out = CaptionStage(pii="off").process_batch(batch(CAPTIONS, STATUS, REASONS))
    assert out.column("caption").to_pylist()[2] == "call me at 555-123-4567"
    assert out.column("pii").to_pylist() == [None] * len(CAPTIONS)
    assert out.schema.field("pii").type == pa.list_(pa.string())


def test_stage_redacts_rejected_captions_found_in_markup_or_raw_text():
    """A rejected row keeps its raw caption unless personal data hides in it: in markup the cleaned text
    drops, behind an HTML entity, or in a caption rejected as boilerplate (a file name)."""
    captions = ['<a href="mailto:jo@ex.com">contact</a> a red cat', "write to jo&#64;ex.com please", "jo@ex.com.jpg"]
    for pii in ("redact", "reject"):
        out = CaptionStage(pii=pii).process_batch(
            batch(captions, ["rejected", "rejected", "kept"], ["duplicate_key", "missing_image", None])
        )
        stored = out.column("caption").to_pylist()
        assert not any("jo@ex.com" in c or "&#64;" in c for c in stored), stored
        assert out.column("reject_reason").to_pylist()[2] == RejectReason.BOILERPLATE_CAPTION.value
        assert all(kinds == ["email"] for kinds in out.column("pii").to_pylist())


def test_stage_switches_off_cleaning_and_boilerplate():
    out = CaptionStage(clean=False, reject_boilerplate=False, pii_kinds=("email",)).process_batch(
        batch(["<b>IMG_1234.jpg</b>", "image", "555-123-4567 a@b.co"])
    )
    assert out.column("caption").to_pylist() == ["<b>IMG_1234.jpg</b>", "image", "555-123-4567 [EMAIL]"]
    assert out.column("status").to_pylist() == ["kept"] * 3
    assert out.column("pii").to_pylist() == [[], [], ["email"]]


def test_stage_on_an_empty_batch_and_an_all_rejected_batch():
    empty = batch([])
    out = CaptionStage().process_batch(empty)
    assert out.num_rows == 0 and out.schema.field("pii").type == pa.list_(pa.string())
    rejected = batch(["IMG_1.jpg", "a@b.co"], ["rejected"] * 2, ["not_an_image"] * 2)
    out = CaptionStage().process_batch(rejected)
    assert out.column("caption").to_pylist() == ["IMG_1.jpg", "[EMAIL]"]
    assert out.column("pii").to_pylist() == [[], ["email"]]
    assert out.column("reject_reason").to_pylist() == ["not_an_image"] * 2
