"""Language-ID benchmark: py3langid against lingua-language-detector on short captions.

Two sets of captions with known languages:
- synthetic: `n` scenes of the synthetic world, each captioned with an English template (world.py) and
  in each language the `non_english` planter writes (synth/languages.py);
- web: hand-written short alt-texts as web pages carry them (products, food, travel, people, news),
  25 per language in English, German, French, Spanish, Italian, Portuguese, Dutch, Polish and Swedish:
  the same 25 pictures described in each language (20 of 4-12 words, 5 headline-like ones of 2-6), so the
  languages compare on equal content.

For each detector: accuracy of its top language (overall and per language), the language stage's
decision with its defaults (keep=en, min_score=0.5: an English caption must be kept, any other rejected;
below min_score a caption is kept), captions/s in one process pinned to one core (best of 3 runs over
half the captions), and load time and memory in a fresh process.
lingua runs twice, in its high-accuracy mode (all languages preloaded) and its low-accuracy mode;
without the package its columns are skipped. Last, the stage itself (`LanguageFilter.process_batch` on
Arrow batches of 1,000 rows) is timed the same way; headline ratio: stage rows/s / bare detector loop
captions/s (py3langid, the stage's detector).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

import click

from curation.lab.bench.common import json_line

WEB_ALT_TEXTS: dict[str, tuple[str, ...]] = {
    "en": (
        "Woman in a red coat walking her dog in the park",
        "Close-up of fresh strawberries in a wooden bowl",
        "Men's leather hiking boots, brown, size 10",
        "Aerial view of the city skyline at sunset",
        "Two kids playing football on the beach",
        "Modern kitchen with white cabinets and marble countertops",
        "Vintage bicycle leaning against a brick wall",
        "Homemade chocolate chip cookies on a cooling rack",
        "Golden retriever puppy sleeping on a blue blanket",
        "Mountain lake surrounded by pine trees in autumn",
        "Business team meeting in a bright office",
        "Hand holding a smartphone with a map on the screen",
        "Cozy living room with a grey sofa and plants",
        "Bride and groom dancing at their wedding reception",
        "Stack of old books on a library shelf",
        "Cup of coffee and a croissant on a cafe table",
        "Red tulips in a glass vase by the window",
        "Silver wristwatch with a black leather strap",
        "Firefighters putting out a house fire at night",
        "Sailboat on a calm sea under a cloudy sky",
        "Sunset over the sea",
        "Easy apple pie recipe",
        "Meet our team",
        "Summer sale now on",
        "View from the hotel balcony",
    ),
    "de": (
        "Frau mit rotem Mantel geht mit ihrem Hund im Park spazieren",
        "Frische Erdbeeren in einer Holzschale",
        "Herren Wanderschuhe aus Leder, braun, Größe 43",
        "Blick über die Dächer der Altstadt bei Sonnenuntergang",
        "Zwei Kinder spielen Fußball am Strand",
        "Moderne Küche mit weißen Schränken und Arbeitsplatte aus Marmor",
        "Altes Fahrrad lehnt an einer Backsteinmauer",
        "Selbstgebackene Kekse mit Schokoladenstückchen",
        "Golden Retriever Welpe schläft auf einer blauen Decke",
        "Bergsee umgeben von Tannen im Herbst",
        "Besprechung im Büro mit Kollegen",
        "Hand hält ein Smartphone mit einer Karte auf dem Bildschirm",
        "Gemütliches Wohnzimmer mit grauem Sofa und Pflanzen",
        "Brautpaar tanzt auf der Hochzeitsfeier",
        "Stapel alter Bücher im Regal einer Bibliothek",
        "Tasse Kaffee und Croissant auf einem Tisch im Café",
        "Rote Tulpen in einer Glasvase am Fenster",
        "Silberne Armbanduhr mit schwarzem Lederarmband",
        "Feuerwehrleute löschen nachts einen Hausbrand",
        "Segelboot auf ruhiger See unter bewölktem Himmel",
        "Sonnenuntergang am Meer",
        "Einfaches Rezept für Apfelkuchen",
        "Unser Team stellt sich vor",
        "Sommerschlussverkauf jetzt",
        "Blick vom Hotelbalkon",
    ),
    "fr": (
        "Femme en manteau rouge promenant son chien dans le parc",
        "Gros plan de fraises fraîches dans un bol en bois",
        "Chaussures de randonnée en cuir pour homme, marron, pointure 43",
        "Vue aérienne de la ville au coucher du soleil",
        "Deux enfants jouent au football sur la plage",
        "Cuisine moderne avec placards blancs et plan de travail en marbre",
        "Vieux vélo appuyé contre un mur de briques",
        "Cookies maison aux pépites de chocolat",
        "Chiot golden retriever qui dort sur une couverture bleue",
        "Lac de montagne entouré de sapins en automne",
        "Réunion d'équipe dans un bureau lumineux",
        "Main tenant un smartphone avec une carte à l'écran",
        "Salon cosy avec un canapé gris et des plantes",
        "Les mariés dansent pendant la réception",
        "Pile de vieux livres sur une étagère de bibliothèque",
        "Tasse de café et croissant sur une table de café",
        "Tulipes rouges dans un vase en verre près de la fenêtre",
        "Montre en argent avec bracelet en cuir noir",
        "Pompiers éteignant un incendie de maison la nuit",
        "Voilier sur une mer calme sous un ciel nuageux",
        "Coucher de soleil sur la mer",
        "Recette facile de tarte aux pommes",
        "Découvrez notre équipe",
        "Soldes d'été en cours",
        "Vue depuis le balcon de l'hôtel",
    ),
    "es": (
        "Mujer con abrigo rojo paseando a su perro en el parque",
        "Primer plano de fresas frescas en un cuenco de madera",
        "Botas de montaña de cuero para hombre, marrón, talla 43",
        "Vista aérea de la ciudad al atardecer",
        "Dos niños jugando al fútbol en la playa",
        "Cocina moderna con armarios blancos y encimera de mármol",
        "Bicicleta antigua apoyada en una pared de ladrillo",
        "Galletas caseras con pepitas de chocolate",
        "Cachorro de golden retriever durmiendo sobre una manta azul",
        "Lago de montaña rodeado de pinos en otoño",
        "Reunión de equipo en una oficina luminosa",
        "Mano sosteniendo un móvil con un mapa en la pantalla",
        "Salón acogedor con sofá gris y plantas",
        "Los novios bailando en el banquete de boda",
        "Pila de libros viejos en una estantería de la biblioteca",
        "Taza de café y cruasán en la mesa de una cafetería",
        "Tulipanes rojos en un jarrón de cristal junto a la ventana",
        "Reloj de pulsera plateado con correa de cuero negro",
        "Bomberos apagando el incendio de una casa por la noche",
        "Velero en un mar en calma bajo un cielo nublado",
        "Atardecer sobre el mar",
        "Receta fácil de tarta de manzana",
        "Conoce a nuestro equipo",
        "Rebajas de verano ya",
        "Vista desde el balcón del hotel",
    ),
    "it": (
        "Donna con cappotto rosso che porta a spasso il cane nel parco",
        "Primo piano di fragole fresche in una ciotola di legno",
        "Scarponi da trekking in pelle da uomo, marroni, taglia 43",
        "Vista aerea della città al tramonto",
        "Due bambini giocano a calcio sulla spiaggia",
        "Cucina moderna con mobili bianchi e piano di lavoro in marmo",
        "Bicicletta d'epoca appoggiata a un muro di mattoni",
        "Biscotti fatti in casa con gocce di cioccolato",
        "Cucciolo di golden retriever che dorme su una coperta blu",
        "Lago di montagna circondato da pini in autunno",
        "Riunione di lavoro in un ufficio luminoso",
        "Mano che tiene uno smartphone con una mappa sullo schermo",
        "Soggiorno accogliente con divano grigio e piante",
        "Gli sposi ballano al ricevimento di nozze",
        "Pila di libri vecchi su uno scaffale della biblioteca",
        "Tazza di caffè e cornetto sul tavolino di un bar",
        "Tulipani rossi in un vaso di vetro vicino alla finestra",
        "Orologio da polso argentato con cinturino in pelle nera",
        "Vigili del fuoco spengono l'incendio di una casa di notte",
        "Barca a vela su un mare calmo sotto un cielo nuvoloso",
        "Tramonto sul mare",
        "Ricetta facile della torta di mele",
        "Conosci il nostro team",
        "Saldi estivi in corso",
        "Vista dal balcone dell'hotel",
    ),
    "pt": (
        "Mulher de casaco vermelho passeando com o cachorro no parque",
        "Close de morangos frescos em uma tigela de madeira",
        "Bota de trilha masculina de couro, marrom, tamanho 42",
        "Vista aérea da cidade ao pôr do sol",
        "Duas crianças jogando futebol na praia",
        "Cozinha moderna com armários brancos e bancada de mármore",
        "Bicicleta antiga encostada em uma parede de tijolos",
        "Cookies caseiros com gotas de chocolate",
        "Filhote de golden retriever dormindo em um cobertor azul",
        "Lago nas montanhas cercado de pinheiros no outono",
        "Reunião de equipe em um escritório iluminado",
        "Mão segurando um celular com um mapa na tela",
        "Sala de estar aconchegante com sofá cinza e plantas",
        "Os noivos dançando na festa de casamento",
        "Pilha de livros antigos em uma estante da biblioteca",
        "Xícara de café e croissant na mesa de uma cafeteria",
        "Tulipas vermelhas em um vaso de vidro perto da janela",
        "Relógio de pulso prateado com pulseira de couro preta",
        "Bombeiros apagando um incêndio em uma casa à noite",
        "Veleiro em um mar calmo sob um céu nublado",
        "Pôr do sol sobre o mar",
        "Receita fácil de torta de maçã",
        "Conheça a nossa equipe",
        "Promoção de verão",
        "Vista da varanda do hotel",
    ),
    "nl": (
        "Vrouw in een rode jas laat haar hond uit in het park",
        "Close-up van verse aardbeien in een houten kom",
        "Leren wandelschoenen voor heren, bruin, maat 43",
        "Luchtfoto van de stad bij zonsondergang",
        "Twee kinderen spelen voetbal op het strand",
        "Moderne keuken met witte kastjes en een marmeren aanrecht",
        "Oude fiets tegen een bakstenen muur",
        "Zelfgebakken koekjes met stukjes chocolade",
        "Golden retriever pup slaapt op een blauwe deken",
        "Bergmeer omringd door dennenbomen in de herfst",
        "Teamoverleg in een licht kantoor",
        "Hand met een smartphone met een kaart op het scherm",
        "Gezellige woonkamer met een grijze bank en planten",
        "Bruid en bruidegom dansen op hun bruiloft",
        "Stapel oude boeken op een plank in de bibliotheek",
        "Kopje koffie en een croissant op een tafeltje in het café",
        "Rode tulpen in een glazen vaas bij het raam",
        "Zilveren horloge met een zwarte leren band",
        "Brandweerlieden blussen 's nachts een woningbrand",
        "Zeilboot op een kalme zee onder een bewolkte lucht",
        "Zonsondergang boven de zee",
        "Makkelijk recept voor appeltaart",
        "Maak kennis met ons team",
        "Zomeruitverkoop nu",
        "Uitzicht vanaf het hotelbalkon",
    ),
    "pl": (
        "Kobieta w czerwonym płaszczu spaceruje z psem w parku",
        "Zbliżenie świeżych truskawek w drewnianej misce",
        "Męskie skórzane buty trekkingowe, brązowe, rozmiar 43",
        "Widok z lotu ptaka na miasto o zachodzie słońca",
        "Dwoje dzieci gra w piłkę na plaży",
        "Nowoczesna kuchnia z białymi szafkami i marmurowym blatem",
        "Stary rower oparty o ceglaną ścianę",
        "Domowe ciasteczka z kawałkami czekolady",
        "Szczeniak golden retrievera śpi na niebieskim kocu",
        "Górskie jezioro otoczone sosnami jesienią",
        "Spotkanie zespołu w jasnym biurze",
        "Dłoń trzymająca smartfon z mapą na ekranie",
        "Przytulny salon z szarą kanapą i roślinami",
        "Para młoda tańczy na weselu",
        "Stos starych książek na półce w bibliotece",
        "Filiżanka kawy i rogalik na stoliku w kawiarni",
        "Czerwone tulipany w szklanym wazonie przy oknie",
        "Srebrny zegarek na rękę z czarnym skórzanym paskiem",
        "Strażacy gaszą w nocy pożar domu",
        "Żaglówka na spokojnym morzu pod zachmurzonym niebem",
        "Zachód słońca nad morzem",
        "Prosty przepis na szarlotkę",
        "Poznaj nasz zespół",
        "Letnia wyprzedaż trwa",
        "Widok z balkonu hotelowego",
    ),
    "sv": (
        "Kvinna i röd kappa rastar sin hund i parken",
        "Närbild på färska jordgubbar i en träskål",
        "Vandringskängor i läder för herr, bruna, storlek 43",
        "Flygfoto över staden i solnedgången",
        "Två barn spelar fotboll på stranden",
        "Modernt kök med vita skåp och bänkskiva i marmor",
        "Gammal cykel lutad mot en tegelvägg",
        "Hembakade kakor med chokladbitar",
        "Golden retriever-valp sover på en blå filt",
        "Fjällsjö omgiven av tallar på hösten",
        "Teammöte på ett ljust kontor",
        "Hand som håller en mobil med en karta på skärmen",
        "Mysigt vardagsrum med grå soffa och växter",
        "Brudparet dansar på bröllopsfesten",
        "Hög med gamla böcker på en hylla i biblioteket",
        "En kopp kaffe och en croissant på ett kafébord",
        "Röda tulpaner i en glasvas vid fönstret",
        "Armbandsur i silver med svart läderarmband",
        "Brandmän släcker en husbrand på natten",
        "Segelbåt på ett lugnt hav under en molnig himmel",
        "Solnedgång över havet",
        "Enkelt recept på äppelpaj",
        "Möt vårt team",
        "Sommarrea nu",
        "Utsikt från hotellbalkongen",
    ),
}
STAGE_KEEP, STAGE_MIN_SCORE = ("en",), 0.5  # the stage's defaults (config.LanguageConfig)

SPEED_STRIDE = 2  # captions/s are timed on every 2nd caption of both sets, best of 3 runs
Sample = tuple[str, str]  # (language, caption)
Scorer = Callable[[str], dict[str, float]]  # caption -> {ISO 639-1 code: probability}


def load_py3langid() -> Scorer:
    from curation.stages.language import language_scores, load_detector

    model = load_detector()
    return lambda text: language_scores(model, text)


def _load_lingua(low_accuracy: bool) -> Scorer:
    from lingua import LanguageDetectorBuilder

    builder = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models()
    model = (builder.with_low_accuracy_mode() if low_accuracy else builder).build()

    def scores(text: str) -> dict[str, float]:
        values = model.compute_language_confidence_values(text)
        return {v.language.iso_code_639_1.name.lower(): float(v.value) for v in values} or {"und": 0.0}

    return scores


def load_lingua() -> Scorer:
    return _load_lingua(low_accuracy=False)


def load_lingua_low() -> Scorer:
    return _load_lingua(low_accuracy=True)


LOADERS: dict[str, Callable[[], Scorer]] = {
    "py3langid": load_py3langid,
    "lingua": load_lingua,
    "lingua-low": load_lingua_low,
}


def lingua_installed() -> bool:
    try:
        import lingua  # noqa: F401
    except ImportError:
        return False
    return True


def load_cost(name: str) -> tuple[float, float]:
    """(seconds, MB of resident memory) to load detector `name`, in a fresh process (nothing cached)."""
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measure_load, name).result()


def _measure_load(name: str) -> tuple[float, float]:
    if name.startswith("lingua"):
        import lingua  # noqa: F401 - the package import is not the model's load
    else:
        import py3langid  # noqa: F401

    rss, start = _rss_mb(), time.perf_counter()
    scorer = LOADERS[name]()
    seconds = time.perf_counter() - start
    scorer("warm up")
    return seconds, _rss_mb() - rss


def synthetic_samples(n: int, seed: int) -> list[Sample]:
    """`n` scenes, each captioned in English and in every language the non_english planter writes."""
    import numpy as np

    from curation.lab.synth.languages import LANGUAGES, translated_caption
    from curation.lab.synth.world import sample_scene

    rng = np.random.default_rng(seed)
    samples: list[Sample] = []
    for _ in range(n):
        scene = sample_scene(rng)
        samples.append(("en", scene.caption(rng)))
        samples.extend((lang, translated_caption(scene, lang, rng)) for lang in LANGUAGES)
    return samples


def web_samples() -> list[Sample]:
    return [(lang, text) for lang, texts in WEB_ALT_TEXTS.items() for text in texts]


def score_sets(scorer: Scorer, sets: dict[str, list[Sample]]) -> dict:
    """Per set and language: top-language accuracy and the share of right stage decisions (English kept,
    others rejected), by the top language alone and by the stage's rule; and captions/s over all sets."""
    from curation.stages.language import NO_LANGUAGE, judge

    def decisions(text: str) -> tuple[str, bool, bool]:
        """(top language, rejected by the top language alone, rejected by the stage's rule)."""
        j = judge(scorer(text), STAGE_KEEP, STAGE_MIN_SCORE)
        top_only = j.lang not in STAGE_KEEP and j.lang != NO_LANGUAGE and j.score >= STAGE_MIN_SCORE
        return j.lang, top_only, j.verdict is not None

    result: dict = {}
    for set_name, samples in sets.items():
        predictions = [decisions(text) for _, text in samples]
        tallies: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # accurate, top right, stage right, n
        for (truth, _), (lang, top_only, rejected) in zip(samples, predictions):
            unwanted = truth not in STAGE_KEEP
            tally = tallies[truth]
            tally[0] += lang == truth
            tally[1] += top_only == unwanted
            tally[2] += rejected == unwanted
            tally[3] += 1
        tallies["all"] = [sum(t[k] for t in tallies.values()) for k in range(4)]
        result[set_name] = {
            lang: {"accuracy": t[0] / t[3], "top_right": t[1] / t[3], "stage_right": t[2] / t[3], "n": t[3]}
            for lang, t in tallies.items()
        }
    texts = [text for samples in sets.values() for _, text in samples][::SPEED_STRIDE]
    result["captions_s"] = len(texts) / best_seconds(lambda: [decisions(text) for text in texts])
    return result


def best_seconds(run: Callable[[], object], repeats: int = 3) -> float:
    """The fastest of `repeats` runs (the box may be shared: the best run is the least disturbed)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def stage_rows_per_second(samples: list[Sample], batch_rows: int = 1000) -> float:
    """rows/s of LanguageFilter.process_batch (defaults) on Arrow batches of the captions, after setup."""
    import pyarrow as pa

    from curation.stages.language import LanguageFilter

    stage = LanguageFilter(keep=STAGE_KEEP, min_score=STAGE_MIN_SCORE)
    stage.setup()
    captions = [text for _, text in samples]
    batches = []
    for start in range(0, len(captions), batch_rows):
        chunk = captions[start : start + batch_rows]
        n = len(chunk)
        batches.append(
            pa.table(
                {
                    "key": [f"k{start + i}" for i in range(n)],
                    "caption": chunk,
                    "status": ["kept"] * n,
                    "reject_reason": pa.nulls(n, pa.string()),
                    "reject_stage": pa.nulls(n, pa.string()),
                }
            )
        )
    return len(captions) / best_seconds(lambda: [stage.process_batch(batch) for batch in batches])


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def on_one_core(function):
    """Run `function()` pinned to one CPU (where the OS allows it), so captions/s are per core."""
    import os

    if not hasattr(os, "sched_setaffinity"):
        return function()
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        return function()
    finally:
        os.sched_setaffinity(0, cpus)


def run_language_bench(n: int, seed: int, with_lingua: bool = True, log=None) -> dict:
    return on_one_core(lambda: _run(n, seed, with_lingua, log))


def _run(n: int, seed: int, with_lingua: bool, log) -> dict:
    say = log or (lambda line: None)
    sets = {"synthetic": synthetic_samples(n, seed), "web": web_samples()}
    names = ["py3langid", *(("lingua", "lingua-low") if with_lingua and lingua_installed() else ())]
    figures: dict[str, dict] = {}
    for name in names:
        load_s, load_mb = load_cost(name)
        scorer = LOADERS[name]()
        scorer("warm up")
        figures[name] = {**score_sets(scorer, sets), "load_s": load_s, "load_mb": max(load_mb, 0.0)}
        del scorer
    stage_rows_s = stage_rows_per_second((sets["synthetic"] + sets["web"])[::SPEED_STRIDE])
    ratio = stage_rows_s / figures["py3langid"]["captions_s"]
    _log_table(
        say,
        figures,
        sets,
        n,
        lingua_note=None if len(names) > 1 else ("not installed" if with_lingua else "left out (--no-lingua)"),
    )
    say(
        f"language stage (py3langid, keep=en, min_score=0.5), Arrow batches of 1000 rows, one core: "
        f"{stage_rows_s:,.0f} rows/s = {ratio:.2f} x the bare detector loop"
    )

    def summary(f: dict) -> dict:
        out = {}
        for set_name in sets:
            for key in ("accuracy", "top_right", "stage_right"):
                out[f"{set_name}_{key}"] = round(f[set_name]["all"][key], 4)
        out["web_accuracy_per_language"] = {k: round(v["accuracy"], 4) for k, v in f["web"].items() if k != "all"}
        out.update(captions_s=round(f["captions_s"], 1), load_s=round(f["load_s"], 2), load_mb=round(f["load_mb"], 1))
        return out

    return {
        "bench": "language",
        "n_synthetic": len(sets["synthetic"]),
        "n_web": len(sets["web"]),
        "detectors": {name: summary(f) for name, f in figures.items()},
        "chosen": "py3langid",
        "stage_rows_s": stage_rows_s,
        "ratio": ratio,
    }


def _log_table(say, figures: dict, sets: dict, n: int, lingua_note: str | None) -> None:
    names = list(figures)
    languages = len(sets["synthetic"]) // n - 1
    say(
        f"captions: synthetic {len(sets['synthetic'])} ({n} scenes x English + {languages} languages), "
        f"web alt-texts {len(sets['web'])} ({len(WEB_ALT_TEXTS)} languages x {len(sets['web']) // len(WEB_ALT_TEXTS)})"
    )
    if lingua_note:
        say(
            f"  lingua-language-detector is {lingua_note}: its columns are skipped (pip install lingua-language-detector to compare)"
        )
    say("  acc: top language right.  top / stage: share of right decisions with keep=en, min_score=0.5 (English")
    say("  kept, others rejected) by the top language alone / by the stage's rule (confusable languages pooled)")
    say(f"  {'':<16} {'':>5}" + "".join(f" | {name:^20}" for name in names))
    say(f"  {'set':<10} {'lang':<5} {'n':>5}" + "".join(f" | {'acc':>6} {'top':>6} {'stage':>6}" for _ in names))
    for set_name in sets:
        for lang, m0 in figures[names[0]][set_name].items():
            cells = "".join(
                " | {accuracy:>6.3f} {top_right:>6.3f} {stage_right:>6.3f}".format(**figures[name][set_name][lang])
                for name in names
            )
            say(f"  {set_name:<10} {lang:<5} {m0['n']:>5}" + cells)
    say(f"  {'captions/s, one core':<22}" + "".join(f" | {figures[name]['captions_s']:>20,.0f}" for name in names))
    say(
        f"  {'load (fresh process)':<22}"
        + "".join(f" | {figures[name]['load_s']:>8.1f} s {figures[name]['load_mb']:>6.0f} MB" for name in names)
    )


@click.command("language")
@click.option(
    "--n",
    default=500,
    show_default=True,
    type=click.IntRange(min=1),
    help="Synthetic scenes (each captioned in 8 languages).",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--lingua/--no-lingua",
    default=True,
    show_default=True,
    help="Compare with lingua-language-detector when installed.",
)
def language_command(n: int, seed: int, lingua: bool) -> None:
    """Accuracy and captions/s of py3langid vs lingua on short captions (synthetic and web alt-texts)."""
    click.echo(json_line(run_language_bench(n, seed, with_lingua=lingua, log=click.echo)))
