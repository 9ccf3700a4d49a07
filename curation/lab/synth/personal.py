"""Personal data as scraped alt-texts carry it: a contact e-mail, a phone number or a street address
appended to an otherwise good caption. Made-up names and numbers (phone numbers from the ranges set
aside for fiction and documentation: UK 020 7946 0xxx, US (212) 555-01xx)."""

from __future__ import annotations

import numpy as np

FIRST = ("jane", "john", "maria", "ahmed", "li", "sofia", "lukas", "emma", "noah", "olga", "pierre", "aiko")
LAST = ("doe", "smith", "garcia", "khan", "wang", "rossi", "muller", "novak", "silva", "dubois", "tanaka", "berg")
DOMAINS = ("example.com", "example.org", "mail.example.net", "photos.example.co.uk")
STREETS = ("Baker Street", "Elm Street", "Oak Avenue", "Mill Road", "Sunset Boulevard", "Park Lane", "Church Road")
KINDS = ("email", "phone", "street_address")


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def personal_snippet(rng: np.random.Generator) -> tuple[str, str]:
    """(the kind of personal data, the text to append to a caption)."""
    kind = _pick(rng, KINDS)
    if kind == "email":
        address = f"{_pick(rng, FIRST)}.{_pick(rng, LAST)}@{_pick(rng, DOMAINS)}"
        return kind, _pick(rng, (" - contact {}", ", photo by {}", " (email {})")).format(address)
    if kind == "phone":
        number = (
            f"+44 20 7946 0{int(rng.integers(100, 1000))}"
            if rng.random() < 0.5
            else f"({_pick(rng, ('212', '415', '617'))}) 555-01{int(rng.integers(10, 100))}"
        )
        return kind, _pick(rng, (", call {}", " - phone {}", " tel. {}")).format(number)
    return kind, _pick(rng, (" | {} {}", ", seen at {} {}", " - shop: {} {}")).format(
        int(rng.integers(2, 400)), _pick(rng, STREETS)
    )
