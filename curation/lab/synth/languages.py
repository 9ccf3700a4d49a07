"""Captions of a scene in languages other than English, for the `NonEnglish` planter.

Each language has its words for the world's shapes (with gender and plural), colours, textures and
counts, a noun phrase that follows its grammar (word order, article, agreement of the adjectives
with gender, number and case) and a few caption templates in the style of web alt-text, as the English
templates in world.py are. A translated caption names the same count, colour, shape, texture and
background as an English one would: only its language differs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from curation.lab.synth.world import Scene

COLOUR_ORDER = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "brown", "black", "white", "grey", "cyan")


class Noun(NamedTuple):
    singular: str
    plural: str
    gender: str  # m | f | n (German, Dutch het-words, Swedish ett-words)


def _pick(rng: np.random.Generator, options: tuple):
    return options[int(rng.integers(len(options)))]


def _fill(rng: np.random.Generator, templates: tuple[str, ...], **words: str) -> str:
    return _pick(rng, templates).format(**words)


# ---- German: adjectives before the noun, endings by gender, number, case and article -------------------

_DE_SHAPES = {
    "circle": Noun("Kreis", "Kreise", "m"),
    "square": Noun("Quadrat", "Quadrate", "n"),
    "triangle": Noun("Dreieck", "Dreiecke", "n"),
    "star": Noun("Stern", "Sterne", "m"),
    "hexagon": Noun("Sechseck", "Sechsecke", "n"),
    "cross": Noun("Kreuz", "Kreuze", "n"),
    "diamond": Noun("Raute", "Rauten", "f"),
    "ring": Noun("Ring", "Ringe", "m"),
}
_DE_COLOURS = dict(
    zip(
        COLOUR_ORDER,
        (
            "rot",
            "grün",
            "blau",
            "gelb",
            "violett",
            "orangefarben",
            "rosafarben",
            "braun",
            "schwarz",
            "weiß",
            "grau",
            "türkisfarben",
        ),
    )
)
_DE_TEXTURES = {"plain": "einfarbig", "stripes": "gestreift", "dots": "gepunktet", "checker": "kariert"}
_DE_PATTERNS = {
    "plain": "ohne Muster",
    "stripes": "mit Streifenmuster",
    "dots": "mit Punktmuster",
    "checker": "mit Karomuster",
}
_DE_COUNTS = {2: "zwei", 3: "drei", 4: "vier"}
_DE_TEMPLATES = (
    "{nom} auf {bg_dat}em Hintergrund",
    "Foto von {dat} auf {bg_dat}em Hintergrund",
    "Stockillustration: {nom}, {bg_nom}er Hintergrund",
    "{nom_plain} {pattern} vor einem {bg_dat}en Hintergrund",
    "Clipart mit {dat} vor {bg_dat}em Hintergrund",
    "Bild mit {dat}, Hintergrund {bg_nom}",
)


def _german_phrase(scene: Scene, case: str, with_texture: bool = True) -> str:
    noun = _DE_SHAPES[scene.shape]
    stems = [_DE_COLOURS[scene.colour]] + ([_DE_TEXTURES[scene.texture]] if with_texture else [])
    if scene.count == 1:
        if case == "nom":
            article = "eine" if noun.gender == "f" else "ein"
            ending = {"m": "er", "f": "e", "n": "es"}[noun.gender]
        else:  # dative after ein-: weak endings
            article, ending = ("einer" if noun.gender == "f" else "einem"), "en"
        return " ".join([article, *(s + ending for s in stems), noun.singular])
    plural = noun.plural
    if case == "dat" and not plural.endswith(("n", "s")):
        plural += "n"
    ending = "e" if case == "nom" else "en"  # strong plural endings (no article before the numeral)
    return " ".join([_DE_COUNTS[scene.count], *(s + ending for s in stems), plural])


def german(scene: Scene, rng: np.random.Generator) -> str:
    return _fill(
        rng,
        _DE_TEMPLATES,
        nom=_german_phrase(scene, "nom"),
        dat=_german_phrase(scene, "dat"),
        nom_plain=_german_phrase(scene, "nom", with_texture=False),
        pattern=_DE_PATTERNS[scene.texture],
        bg_dat=_DE_COLOURS[scene.background],
        bg_nom=_DE_COLOURS[scene.background],
    )


# ---- Romance languages: noun, then colour and texture agreeing in gender and number ----------------------
# An adjective is one invariable word, (singular, plural) for both genders, or (m sg, f sg, m pl, f pl).

Adjective = str | tuple[str, str] | tuple[str, str, str, str]


def _agree(word: Adjective, gender: str, plural: bool) -> str:
    if isinstance(word, str):
        return word
    if len(word) == 2:
        return word[plural]
    return word[2 * plural + (gender == "f")]


class Romance(NamedTuple):
    shapes: dict[str, Noun]
    colours: dict[str, Adjective]
    textures: dict[str, Adjective]
    patterns: dict[str, str]  # texture as a phrase after the colour ("with stripes")
    counts: dict[int, tuple[str, str]]  # (masculine, feminine)
    templates: tuple[str, ...]
    elide: tuple[tuple[str, str], ...] = ()  # regex, replacement (French "de un" -> "d'un")

    def phrase(self, scene: Scene, with_texture: bool = True) -> str:
        noun = self.shapes[scene.shape]
        plural = scene.count > 1
        words = [self.counts[scene.count][noun.gender == "f"], noun.plural if plural else noun.singular]
        words.append(_agree(self.colours[scene.colour], noun.gender, plural))
        if with_texture:
            words.append(_agree(self.textures[scene.texture], noun.gender, plural))
        return " ".join(words)

    def caption(self, scene: Scene, rng: np.random.Generator) -> str:
        text = _fill(
            rng,
            self.templates,
            np=self.phrase(scene),
            np_plain=self.phrase(scene, with_texture=False),
            pattern=self.patterns[scene.texture],
            bg=_agree(self.colours[scene.background], "m", False),  # every language's "background" is masculine here
        )
        for pattern, replacement in self.elide:
            text = re.sub(pattern, replacement, text)
        return text


FRENCH = Romance(
    shapes={
        "circle": Noun("cercle", "cercles", "m"),
        "square": Noun("carré", "carrés", "m"),
        "triangle": Noun("triangle", "triangles", "m"),
        "star": Noun("étoile", "étoiles", "f"),
        "hexagon": Noun("hexagone", "hexagones", "m"),
        "cross": Noun("croix", "croix", "f"),
        "diamond": Noun("losange", "losanges", "m"),
        "ring": Noun("anneau", "anneaux", "m"),
    },
    colours=dict(
        zip(
            COLOUR_ORDER,
            (
                ("rouge", "rouges"),
                ("vert", "verte", "verts", "vertes"),
                ("bleu", "bleue", "bleus", "bleues"),
                ("jaune", "jaunes"),
                ("violet", "violette", "violets", "violettes"),
                "orange",
                ("rose", "roses"),
                "marron",
                ("noir", "noire", "noirs", "noires"),
                ("blanc", "blanche", "blancs", "blanches"),
                ("gris", "grise", "gris", "grises"),
                "turquoise",
            ),
        )
    ),
    textures={
        "plain": ("uni", "unie", "unis", "unies"),
        "stripes": ("rayé", "rayée", "rayés", "rayées"),
        "dots": "à pois",
        "checker": "à carreaux",
    },
    patterns={"plain": "sans motif", "stripes": "à rayures", "dots": "à pois", "checker": "à motif damier"},
    counts={1: ("un", "une"), 2: ("deux", "deux"), 3: ("trois", "trois"), 4: ("quatre", "quatre")},
    templates=(
        "{np} sur fond {bg}",
        "photo de {np} sur un fond {bg}",
        "illustration : {np}, fond {bg}",
        "image de {np_plain} {pattern} sur un fond {bg}",
        "dessin de {np} sur un arrière-plan {bg}",
    ),
    elide=((r"\bde (une?)\b", r"d'\1"),),
)

SPANISH = Romance(
    shapes={
        "circle": Noun("círculo", "círculos", "m"),
        "square": Noun("cuadrado", "cuadrados", "m"),
        "triangle": Noun("triángulo", "triángulos", "m"),
        "star": Noun("estrella", "estrellas", "f"),
        "hexagon": Noun("hexágono", "hexágonos", "m"),
        "cross": Noun("cruz", "cruces", "f"),
        "diamond": Noun("rombo", "rombos", "m"),
        "ring": Noun("anillo", "anillos", "m"),
    },
    colours=dict(
        zip(
            COLOUR_ORDER,
            (
                ("rojo", "roja", "rojos", "rojas"),
                ("verde", "verdes"),
                ("azul", "azules"),
                ("amarillo", "amarilla", "amarillos", "amarillas"),
                ("morado", "morada", "morados", "moradas"),
                ("naranja", "naranjas"),
                ("rosa", "rosas"),
                ("marrón", "marrones"),
                ("negro", "negra", "negros", "negras"),
                ("blanco", "blanca", "blancos", "blancas"),
                ("gris", "grises"),
                ("turquesa", "turquesas"),
            ),
        )
    ),
    textures={
        "plain": ("liso", "lisa", "lisos", "lisas"),
        "stripes": ("rayado", "rayada", "rayados", "rayadas"),
        "dots": "de lunares",
        "checker": "a cuadros",
    },
    patterns={"plain": "sin estampado", "stripes": "con rayas", "dots": "con lunares", "checker": "con cuadros"},
    counts={1: ("un", "una"), 2: ("dos", "dos"), 3: ("tres", "tres"), 4: ("cuatro", "cuatro")},
    templates=(
        "{np} sobre fondo {bg}",
        "foto de {np} sobre un fondo {bg}",
        "ilustración: {np}, fondo {bg}",
        "imagen de {np_plain} {pattern} sobre fondo {bg}",
        "dibujo de {np} en un fondo {bg}",
    ),
)

ITALIAN = Romance(
    shapes={
        "circle": Noun("cerchio", "cerchi", "m"),
        "square": Noun("quadrato", "quadrati", "m"),
        "triangle": Noun("triangolo", "triangoli", "m"),
        "star": Noun("stella", "stelle", "f"),
        "hexagon": Noun("esagono", "esagoni", "m"),
        "cross": Noun("croce", "croci", "f"),
        "diamond": Noun("rombo", "rombi", "m"),
        "ring": Noun("anello", "anelli", "m"),
    },
    colours=dict(
        zip(
            COLOUR_ORDER,
            (
                ("rosso", "rossa", "rossi", "rosse"),
                ("verde", "verdi"),
                "blu",
                ("giallo", "gialla", "gialli", "gialle"),
                "viola",
                ("arancione", "arancioni"),
                "rosa",
                ("marrone", "marroni"),
                ("nero", "nera", "neri", "nere"),
                ("bianco", "bianca", "bianchi", "bianche"),
                ("grigio", "grigia", "grigi", "grigie"),
                "turchese",
            ),
        )
    ),
    textures={"plain": "in tinta unita", "stripes": "a righe", "dots": "a pois", "checker": "a quadretti"},
    patterns={
        "plain": "senza motivi",
        "stripes": "con motivo a righe",
        "dots": "con motivo a pois",
        "checker": "con motivo a scacchi",
    },
    counts={1: ("un", "una"), 2: ("due", "due"), 3: ("tre", "tre"), 4: ("quattro", "quattro")},
    templates=(
        "{np} su sfondo {bg}",
        "foto di {np} su uno sfondo {bg}",
        "illustrazione: {np}, sfondo {bg}",
        "immagine di {np_plain} {pattern} su sfondo {bg}",
        "disegno di {np} su fondo {bg}",
    ),
)

PORTUGUESE = Romance(
    shapes={
        "circle": Noun("círculo", "círculos", "m"),
        "square": Noun("quadrado", "quadrados", "m"),
        "triangle": Noun("triângulo", "triângulos", "m"),
        "star": Noun("estrela", "estrelas", "f"),
        "hexagon": Noun("hexágono", "hexágonos", "m"),
        "cross": Noun("cruz", "cruzes", "f"),
        "diamond": Noun("losango", "losangos", "m"),
        "ring": Noun("anel", "anéis", "m"),
    },
    colours=dict(
        zip(
            COLOUR_ORDER,
            (
                ("vermelho", "vermelha", "vermelhos", "vermelhas"),
                ("verde", "verdes"),
                ("azul", "azuis"),
                ("amarelo", "amarela", "amarelos", "amarelas"),
                ("roxo", "roxa", "roxos", "roxas"),
                "laranja",
                "rosa",
                ("marrom", "marrons"),
                ("preto", "preta", "pretos", "pretas"),
                ("branco", "branca", "brancos", "brancas"),
                "cinza",
                "turquesa",
            ),
        )
    ),
    textures={
        "plain": ("liso", "lisa", "lisos", "lisas"),
        "stripes": ("listrado", "listrada", "listrados", "listradas"),
        "dots": "de bolinhas",
        "checker": "xadrez",
    },
    patterns={
        "plain": "sem estampa",
        "stripes": "com listras",
        "dots": "com bolinhas",
        "checker": "com estampa xadrez",
    },
    counts={1: ("um", "uma"), 2: ("dois", "duas"), 3: ("três", "três"), 4: ("quatro", "quatro")},
    templates=(
        "{np} sobre fundo {bg}",
        "foto de {np} em um fundo {bg}",
        "ilustração: {np}, fundo {bg}",
        "imagem de {np_plain} {pattern} sobre fundo {bg}",
        "desenho de {np} com fundo {bg}",
    ),
)


# ---- Dutch and Swedish: adjectives before the noun, inflected by gender and number -------------------

_NL_SHAPES = {
    "circle": Noun("cirkel", "cirkels", "m"),  # de-words: m; het-words: n
    "square": Noun("vierkant", "vierkanten", "n"),
    "triangle": Noun("driehoek", "driehoeken", "m"),
    "star": Noun("ster", "sterren", "m"),
    "hexagon": Noun("zeshoek", "zeshoeken", "m"),
    "cross": Noun("kruis", "kruisen", "n"),
    "diamond": Noun("ruit", "ruiten", "m"),
    "ring": Noun("ring", "ringen", "m"),
}
_NL_COLOURS = dict(
    zip(
        COLOUR_ORDER,
        (  # (bare, inflected)
            ("rood", "rode"),
            ("groen", "groene"),
            ("blauw", "blauwe"),
            ("geel", "gele"),
            ("paars", "paarse"),
            ("oranje", "oranje"),
            ("roze", "roze"),
            ("bruin", "bruine"),
            ("zwart", "zwarte"),
            ("wit", "witte"),
            ("grijs", "grijze"),
            ("turquoise", "turquoise"),
        ),
    )
)
_NL_TEXTURES = {
    "plain": ("effen", "effen"),
    "stripes": ("gestreept", "gestreepte"),
    "dots": ("gestippeld", "gestippelde"),
    "checker": ("geruit", "geruite"),
}
_NL_PATTERNS = {
    "plain": "zonder patroon",
    "stripes": "met strepen",
    "dots": "met stippen",
    "checker": "met een ruitpatroon",
}
_NL_COUNTS = {1: "een", 2: "twee", 3: "drie", 4: "vier"}
_NL_TEMPLATES = (
    "{np} op een {bg} achtergrond",
    "foto van {np} op een {bg} achtergrond",
    "stockillustratie: {np}, {bg} achtergrond",
    "{np_plain} {pattern} tegen een {bg} achtergrond",
    "tekening van {np} op een {bg} ondergrond",
)

_SV_SHAPES = {
    "circle": Noun("cirkel", "cirklar", "m"),  # en-words: m; ett-words: n
    "square": Noun("kvadrat", "kvadrater", "m"),
    "triangle": Noun("triangel", "trianglar", "m"),
    "star": Noun("stjärna", "stjärnor", "m"),
    "hexagon": Noun("hexagon", "hexagoner", "m"),
    "cross": Noun("kors", "kors", "n"),
    "diamond": Noun("romb", "romber", "m"),
    "ring": Noun("ring", "ringar", "m"),
}
_SV_COLOURS = dict(
    zip(
        COLOUR_ORDER,
        (  # (en-form, ett-form, plural)
            ("röd", "rött", "röda"),
            ("grön", "grönt", "gröna"),
            ("blå", "blått", "blå"),
            ("gul", "gult", "gula"),
            ("lila", "lila", "lila"),
            ("orange", "orange", "orange"),
            ("rosa", "rosa", "rosa"),
            ("brun", "brunt", "bruna"),
            ("svart", "svart", "svarta"),
            ("vit", "vitt", "vita"),
            ("grå", "grått", "grå"),
            ("turkos", "turkos", "turkosa"),
        ),
    )
)
_SV_TEXTURES = {
    "plain": ("enfärgad", "enfärgat", "enfärgade"),
    "stripes": ("randig", "randigt", "randiga"),
    "dots": ("prickig", "prickigt", "prickiga"),
    "checker": ("rutig", "rutigt", "rutiga"),
}
_SV_PATTERNS = {"plain": "utan mönster", "stripes": "med ränder", "dots": "med prickar", "checker": "med rutmönster"}
_SV_COUNTS = {2: "två", 3: "tre", 4: "fyra"}
_SV_TEMPLATES = (
    "{np} på {bg} bakgrund",
    "foto av {np} på {bg} bakgrund",
    "illustration: {np}, {bg} bakgrund",
    "{np_plain} {pattern} mot en {bg} bakgrund",
    "teckning av {np} på en {bg} bakgrund",
)


def _dutch_phrase(scene: Scene, with_texture: bool = True) -> str:
    noun = _NL_SHAPES[scene.shape]
    inflected = scene.count > 1 or noun.gender != "n"  # "een rood vierkant", but "een rode cirkel"
    adjectives = [_NL_COLOURS[scene.colour]] + ([_NL_TEXTURES[scene.texture]] if with_texture else [])
    words = [_NL_COUNTS[scene.count], *(a[inflected] for a in adjectives)]
    return " ".join([*words, noun.plural if scene.count > 1 else noun.singular])


def dutch(scene: Scene, rng: np.random.Generator) -> str:
    return _fill(
        rng,
        _NL_TEMPLATES,
        np=_dutch_phrase(scene),
        np_plain=_dutch_phrase(scene, with_texture=False),
        pattern=_NL_PATTERNS[scene.texture],
        bg=_NL_COLOURS[scene.background][1],  # de achtergrond: inflected
    )


def _swedish_phrase(scene: Scene, with_texture: bool = True) -> str:
    noun = _SV_SHAPES[scene.shape]
    form = 2 if scene.count > 1 else (1 if noun.gender == "n" else 0)
    adjectives = [_SV_COLOURS[scene.colour]] + ([_SV_TEXTURES[scene.texture]] if with_texture else [])
    count = ("ett" if noun.gender == "n" else "en") if scene.count == 1 else _SV_COUNTS[scene.count]
    return " ".join([count, *(a[form] for a in adjectives), noun.plural if scene.count > 1 else noun.singular])


def swedish(scene: Scene, rng: np.random.Generator) -> str:
    return _fill(
        rng,
        _SV_TEMPLATES,
        np=_swedish_phrase(scene),
        np_plain=_swedish_phrase(scene, with_texture=False),
        pattern=_SV_PATTERNS[scene.texture],
        bg=_SV_COLOURS[scene.background][0],  # en bakgrund
    )


CAPTIONERS: dict[str, Callable[[Scene, np.random.Generator], str]] = {
    "de": german,
    "fr": FRENCH.caption,
    "es": SPANISH.caption,
    "it": ITALIAN.caption,
    "pt": PORTUGUESE.caption,
    "nl": dutch,
    "sv": swedish,
}
LANGUAGES: tuple[str, ...] = tuple(CAPTIONERS)  # ISO 639-1 codes
SHAPE_NOUNS: dict[str, dict[str, Noun]] = {
    "de": _DE_SHAPES,
    "fr": FRENCH.shapes,
    "es": SPANISH.shapes,
    "it": ITALIAN.shapes,
    "pt": PORTUGUESE.shapes,
    "nl": _NL_SHAPES,
    "sv": _SV_SHAPES,
}


def translated_caption(scene: Scene, language: str, rng: np.random.Generator) -> str:
    """A correct caption of `scene` in `language` (one of LANGUAGES), template picked by `rng`."""
    if language not in CAPTIONERS:
        raise ValueError(f"no captions in {language!r}: use one of {', '.join(LANGUAGES)}")
    return CAPTIONERS[language](scene, rng)
