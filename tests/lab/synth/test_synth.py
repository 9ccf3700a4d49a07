"""The synthetic world: img2dataset layouts, planted defects as the truth says, and reproducibility."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.lab.synth import DEFECT_KINDS, generate
from curation.lab.synth.defects import DEFAULT_PLANTERS
from curation.lab.synth.img2dataset import METADATA_SCHEMA
from curation.lab.synth.world import COLOURS, SHAPES, sample_scene

ROWS = 300
SHARD_SIZE = 100


def read_webdataset(out: Path, shards: list[str]) -> dict[str, dict]:
    """Record key -> {"jpg", "txt", "json"} payloads, read from the tars."""
    records: dict[str, dict] = {}
    for shard in shards:
        with tarfile.open(out / f"{shard}.tar") as tar:
            for member in tar:
                stem, ext = member.name.split(".", 1)
                records.setdefault(f"{shard}/{stem}", {})[ext] = tar.extractfile(member).read()
    return records


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, dict, dict[str, dict]]:
    out = tmp_path_factory.mktemp("synth") / "wds"
    truth = generate(str(out), rows=ROWS, seed=7, fmt="webdataset", shard_size=SHARD_SIZE)
    return out, truth, read_webdataset(out, truth["shards"])


def keys_labelled(truth: dict, kind: str) -> list[str]:
    return [key for key, label in truth["labels"].items() if label == kind]


def decoded(payload: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(payload))
    image.load()
    return image


def thumbnail(payload: bytes) -> np.ndarray:
    return np.asarray(decoded(payload).convert("L").resize((8, 8), Image.Resampling.BOX), np.float32)


def caption_names(caption: str, scene: dict) -> bool:
    return scene["shape"] in caption and scene["colour"] in caption


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_same_arguments_give_byte_identical_files(tmp_path, fmt):
    def files(out: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}

    first = generate(str(tmp_path / "a"), rows=60, seed=3, fmt=fmt, shard_size=25)
    second = generate(str(tmp_path / "b"), rows=60, seed=3, fmt=fmt, shard_size=25)
    assert first == second
    assert files(tmp_path / "a") == files(tmp_path / "b")
    other = generate(str(tmp_path / "c"), rows=60, seed=4, fmt=fmt, shard_size=25)
    assert other["labels"] != first["labels"] or other["scenes"] != first["scenes"]


def test_webdataset_layout_matches_img2dataset(world):
    out, truth, records = world
    assert truth["shards"] == ["00000", "00001", "00002"]
    expected = {f"{s}{suffix}" for s in truth["shards"] for suffix in (".tar", ".parquet", "_stats.json")}
    assert {p.name for p in out.iterdir()} == expected | {"truth.json"}
    assert json.loads((out / "truth.json").read_text()) == truth

    for shard in truth["shards"]:
        with tarfile.open(out / f"{shard}.tar") as tar:
            names = tar.getnames()
            assert all(m.mtime == tar.getmembers()[0].mtime for m in tar.getmembers())
        keys = [f"{shard}{i:04d}" for i in range(SHARD_SIZE)]
        assert names == [f"{k}.{ext}" for k in keys for ext in ("jpg", "json", "txt")]

        metadata = pq.read_table(out / f"{shard}.parquet")
        assert metadata.schema == METADATA_SCHEMA
        assert [m["key"] for m in metadata.to_pylist()] == keys
        for row in metadata.to_pylist():
            record = records[f"{shard}/{row['key']}"]
            assert json.loads(record["json"]) == row
            assert row["caption"] == record["txt"].decode()
            assert row["url"] == f"https://synthetic.invalid/img/{row['key']}.jpg"
            assert row["status"] == "success" and row["error_message"] is None
            assert row["sha256"] == hashlib.sha256(record["jpg"]).hexdigest()

        stats = json.loads((out / f"{shard}_stats.json").read_text())
        assert stats["count"] == stats["successes"] == SHARD_SIZE
        assert stats["failed_to_download"] == 0


def test_metadata_sizes_are_the_images_own(world):
    out, truth, records = world
    broken = set(keys_labelled(truth, "truncated_jpeg")) | set(keys_labelled(truth, "not_an_image"))
    for key, record in records.items():
        meta = json.loads(record["json"])
        if key in broken:
            assert meta["width"] is None and meta["height"] is None
        else:
            assert (meta["width"], meta["height"]) == decoded(record["jpg"]).size


def test_every_row_is_labelled_and_described(world):
    _, truth, records = world
    assert set(truth["labels"]) == set(records) == set(truth["scenes"])
    assert len(truth["labels"]) == truth["rows"] == ROWS
    assert set(truth["labels"].values()) <= {"clean", *DEFECT_KINDS}


def test_defect_counts_follow_the_fractions(world):
    _, truth, _ = world
    counts = Counter(truth["labels"].values())
    for planter in DEFAULT_PLANTERS:
        expected = ROWS * planter.fraction
        assert counts[planter.kind] >= 1, planter.kind
        assert abs(counts[planter.kind] - expected) <= max(1, 0.2 * expected), (planter.kind, counts)
    assert counts["clean"] >= ROWS * 0.7


def test_clean_images_have_normal_sizes(world):
    _, truth, records = world
    for key in keys_labelled(truth, "clean"):
        width, height = decoded(records[key]["jpg"]).size
        assert 96 <= min(width, height) and max(width, height) <= 256
        assert 0.75 <= width / height <= 1.34


def test_duplicate_groups_are_well_formed(world):
    _, truth, _ = world
    groups = truth["duplicate_groups"]
    assert {g["kind"] for g in groups} == {"exact", "near", "semantic"}
    copies = [c for g in groups for c in g["copies"]]
    assert len(copies) == len(set(copies))
    for group in groups:
        assert truth["labels"][group["original"]] == "clean"
        assert 1 <= len(group["copies"]) <= 2
        kind = f"{group['kind']}_duplicate"
        assert all(truth["labels"][c] == kind for c in group["copies"])
        assert all(truth["scenes"][c] == truth["scenes"][group["original"]] for c in group["copies"])
    # copies land anywhere, also in other shards than their original
    assert any(c.split("/")[0] != g["original"].split("/")[0] for g in groups for c in g["copies"])


def test_exact_duplicates_have_identical_bytes_and_another_caption(world):
    _, truth, records = world
    for group in (g for g in truth["duplicate_groups"] if g["kind"] == "exact"):
        assert group["variant"] is None
        original = records[group["original"]]
        for copy in group["copies"]:
            assert records[copy]["jpg"] == original["jpg"]
            assert caption_names(records[copy]["txt"].decode(), truth["scenes"][copy])


def test_near_duplicates_differ_in_bytes_but_look_the_same(world):
    _, truth, records = world
    near = [g for g in truth["duplicate_groups"] if g["kind"] == "near"]
    assert {g["variant"] for g in near} == {"resize", "recompress", "crop"}
    for group in near:
        original = records[group["original"]]["jpg"]
        width, height = decoded(original).size
        for copy in (records[c]["jpg"] for c in group["copies"]):
            assert copy != original
            assert np.abs(thumbnail(copy) - thumbnail(original)).mean() < 10
            copy_width, copy_height = decoded(copy).size
            if group["variant"] == "resize":
                assert 0.45 * width <= copy_width <= 0.85 * width
            elif group["variant"] == "crop":
                assert 0.87 * width <= copy_width < width and 0.87 * height <= copy_height < height
            else:
                assert (copy_width, copy_height) == (width, height)


def test_semantic_duplicates_are_the_same_scene_but_no_perceptual_match(world):
    import imagehash

    _, truth, records = world
    semantic = [g for g in truth["duplicate_groups"] if g["kind"] == "semantic"]
    assert {g["variant"] for g in semantic} == {"mirror", "flip", "mirror_reframe"}
    for group in semantic:
        original = decoded(records[group["original"]]["jpg"])
        for copy in (decoded(records[c]["jpg"]) for c in group["copies"]):
            assert imagehash.phash(copy) - imagehash.phash(original) >= 20  # no near duplicate
            if group["variant"] == "mirror":  # the original's pixels, mirrored
                mirrored = np.asarray(original.transpose(Image.Transpose.FLIP_LEFT_RIGHT), np.float32)
                assert np.abs(np.asarray(copy, np.float32) - mirrored).mean() < 6
            elif group["variant"] == "flip":
                flipped = np.asarray(original.transpose(Image.Transpose.FLIP_TOP_BOTTOM), np.float32)
                assert np.abs(np.asarray(copy, np.float32) - flipped).mean() < 6
            else:
                assert copy.width < original.width and copy.height < original.height


def test_only_planted_duplicates_share_a_description(world):
    _, truth, _ = world
    copies = {c for g in truth["duplicate_groups"] for c in g["copies"]}
    descriptions = [tuple(sorted(scene.items())) for key, scene in truth["scenes"].items() if key not in copies]
    assert len(set(descriptions)) == len(descriptions)  # the originals and every other row: all distinct


def test_descriptions_repeat_only_once_all_are_used():
    import curation.lab.synth as synth

    draft = synth._draft_world(synth.DESCRIPTIONS + 30, seed=3)
    described = [synth._description(row.scene) for row in draft.rows]
    assert len(set(described[: synth.DESCRIPTIONS])) == synth.DESCRIPTIONS  # every description once
    assert len(set(described[synth.DESCRIPTIONS :])) == 30  # then a new cycle of them


def test_misaligned_captions_describe_the_partner(world):
    _, truth, records = world
    pairs = truth["misaligned_pairs"]
    assert len(pairs) * 2 == len(keys_labelled(truth, "misaligned"))
    for a, b in pairs:
        scene_a, scene_b = truth["scenes"][a], truth["scenes"][b]
        assert scene_a["shape"] != scene_b["shape"] and scene_a["colour"] != scene_b["colour"]
        assert caption_names(records[a]["txt"].decode(), scene_b)
        assert caption_names(records[b]["txt"].decode(), scene_a)


def test_broken_payloads_do_not_decode(world):
    _, truth, records = world
    for key in keys_labelled(truth, "truncated_jpeg"):
        assert records[key]["jpg"].startswith(b"\xff\xd8")
        with pytest.raises(OSError):
            decoded(records[key]["jpg"])
    for key in keys_labelled(truth, "not_an_image"):
        with pytest.raises(OSError):  # PIL.UnidentifiedImageError is an OSError
            decoded(records[key]["jpg"])


def test_tiny_and_extreme_aspect_sizes(world):
    _, truth, records = world
    for key in keys_labelled(truth, "tiny"):
        width, height = decoded(records[key]["jpg"]).size
        assert min(width, height) < 24 and max(width, height) / min(width, height) <= 1.34
    for key in keys_labelled(truth, "extreme_aspect"):
        width, height = decoded(records[key]["jpg"]).size
        assert min(width, height) >= 64 and max(width, height) / min(width, height) >= 4


def test_parquet_format_holds_image_bytes(tmp_path):
    truth = generate(str(tmp_path), rows=120, seed=1, fmt="parquet", shard_size=50)
    assert truth["shards"] == ["00000", "00001", "00002"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{s}.parquet" for s in truth["shards"]] + [f"{s}_stats.json" for s in truth["shards"]] + ["truth.json"]
    )
    table = pa.concat_tables([pq.read_table(tmp_path / f"{s}.parquet") for s in truth["shards"]])
    assert table.schema.field("jpg").type == pa.binary()
    assert table.schema.remove(table.schema.get_field_index("jpg")) == METADATA_SCHEMA
    rows = table.to_pylist()
    assert [f"{r['key'][:5]}/{r['key']}" for r in rows] == list(truth["labels"])
    for row in rows:
        assert row["sha256"] == hashlib.sha256(row["jpg"]).hexdigest()
        if truth["labels"][f"{row['key'][:5]}/{row['key']}"] == "clean":
            assert decoded(row["jpg"]).size == (row["width"], row["height"])


def test_captions_name_count_colour_shape_texture_and_background():
    rng = np.random.default_rng(0)
    texture_words = {
        "plain": ("plain", "solid"),
        "stripes": ("striped",),
        "dots": ("dot",),
        "checker": ("checker", "chequer"),
    }
    count_words = {1: ("a ", "an ", "one "), 2: ("two",), 3: ("three",), 4: ("four",)}
    for _ in range(200):
        scene = sample_scene(rng)
        caption = scene.caption(rng)
        assert scene.shape in SHAPES and scene.colour in COLOURS and scene.background != scene.colour
        assert caption_names(caption, scene.attributes()) and scene.background in caption
        assert any(w in caption for w in texture_words[scene.texture])
        assert any(w in caption for w in count_words[scene.count])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fmt": "tfrecord"}, "unknown fmt"),
        ({"rows": 0}, "rows"),
        ({"shard_size": 20_000}, "shard_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_name_the_fix(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(str(tmp_path), **{"rows": 10, **kwargs})


def test_output_dir_overwrites_only_its_own_files(tmp_path):
    generate(str(tmp_path), rows=30, seed=0, shard_size=10)
    truth = generate(str(tmp_path), rows=10, seed=0, shard_size=10, fmt="parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.parquet", "00000_stats.json", "truth.json"]
    assert truth["shards"] == ["00000"]

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="empty or new directory"):
        generate(str(tmp_path), rows=10)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "00000.parquet").exists()


def test_image_defects_are_drawn_over_normal_scenes(world):
    _, truth, records = world

    def magenta(key: str) -> float:
        px = np.asarray(decoded(records[key]["jpg"]).convert("RGB"), np.int32)
        return float(((px[..., 0] > 200) & (px[..., 1] < 70) & (px[..., 2] > 200)).mean())

    for kind in ("unsafe", "watermark", "low_aesthetic"):
        keys = keys_labelled(truth, kind)
        assert keys, kind
        for key in keys:
            width, height = decoded(records[key]["jpg"]).size
            assert 96 <= min(width, height) and 0.75 <= width / height <= 1.34
            assert caption_names(records[key]["txt"].decode(), truth["scenes"][key])
    assert all(magenta(k) > 0.02 for k in keys_labelled(truth, "unsafe"))  # the designated motif
    assert all(magenta(k) < 0.005 for k in keys_labelled(truth, "clean"))  # no clean scene uses its colour


def test_watermarks_and_low_aesthetics_change_the_image():
    from curation.lab.synth.effects import degrade, overlay_watermark

    rng = np.random.default_rng(0)
    image = sample_scene(rng).render(160, 128)
    base = np.asarray(image, np.float32)
    for style in ("tiled", "banner"):
        marked = np.asarray(overlay_watermark(image, rng, style=style), np.float32)
        assert 0.03 < (np.abs(marked - base).max(axis=2) > 40).mean() < 0.6, style
    for variant in ("blur", "noise", "low_contrast"):
        assert np.abs(np.asarray(degrade(image, rng, variant=variant), np.float32) - base).mean() > 5, variant


def test_non_english_captions_describe_the_scene_in_another_language(world):
    from curation.lab.synth.languages import SHAPE_NOUNS
    from curation.stages.language import language_scores, load_detector

    _, truth, records = world
    keys = keys_labelled(truth, "non_english")
    assert len(keys) == round(ROWS * 0.03)
    detector = load_detector()
    for key in keys:
        caption, scene = records[key]["txt"].decode(), truth["scenes"][key]
        scores = language_scores(detector, caption)
        assert max(scores, key=scores.get) != "en", caption
        forms = [
            n.singular if scene["count"] == 1 else n.plural
            for n in (SHAPE_NOUNS[lang][scene["shape"]] for lang in SHAPE_NOUNS)
        ]
        words = caption.replace(",", " ").split()
        assert any(f in words or f + "n" in words for f in forms), caption  # German dative plural: +n


def test_caption_planters_leave_the_other_planters_rows_alone(world, tmp_path):
    from curation.lab.synth.defects import NonEnglish, PiiCaption

    out, truth, records = world
    # last: every other planter picks its rows first
    assert [type(p) for p in DEFAULT_PLANTERS[-2:]] == [NonEnglish, PiiCaption]
    without = generate(
        str(tmp_path), rows=ROWS, seed=7, fmt="webdataset", shard_size=SHARD_SIZE, planters=DEFAULT_PLANTERS[:-2]
    )
    other = read_webdataset(tmp_path, without["shards"])
    planted = set(keys_labelled(truth, "non_english")) | set(keys_labelled(truth, "pii_caption"))
    assert planted and all(without["labels"][k] == "clean" for k in planted)
    assert {k: v for k, v in truth["labels"].items() if k not in planted} == {
        k: v for k, v in without["labels"].items() if k not in planted
    }
    assert truth["duplicate_groups"] == without["duplicate_groups"]
    assert truth["misaligned_pairs"] == without["misaligned_pairs"]
    assert truth["scenes"] == without["scenes"]
    for key, record in records.items():
        assert record["jpg"] == other[key]["jpg"]  # the images are the same everywhere
        assert (record["txt"] != other[key]["txt"]) == (key in planted)  # only the planted captions changed


def test_planted_personal_data_is_what_the_caption_stage_finds(world):
    from curation.stages.caption import redact

    out, truth, records = world
    planted = keys_labelled(truth, "pii_caption")
    assert planted
    for key in planted:
        caption = records[key]["txt"].decode()
        text, kinds = redact(caption)
        assert len(kinds) == 1 and "[" in text, caption
        assert text.startswith(" ".join(caption.split()[:3]))  # the scene's own caption comes first, intact
    for key in keys_labelled(truth, "clean")[:200]:
        assert redact(records[key]["txt"].decode())[1] == []  # templated captions hold none


@pytest.mark.parametrize(
    "language, phrases",
    [
        (
            "de",
            (
                "ein rotes gestreiftes Quadrat",
                "einem roten gestreiften Quadrat",
                "ein rotes Quadrat mit Streifenmuster",
            ),
        ),
        ("fr", ("un carré rouge rayé", "un carré rouge à rayures")),
        ("es", ("un cuadrado rojo rayado", "un cuadrado rojo con rayas")),
        ("it", ("un quadrato rosso a righe", "un quadrato rosso con motivo a righe")),
        ("pt", ("um quadrado vermelho listrado", "um quadrado vermelho com listras")),
        ("nl", ("een rood gestreept vierkant", "een rood vierkant met strepen")),
        ("sv", ("en röd randig kvadrat", "en röd kvadrat med ränder")),
    ],
)
def test_translated_captions_follow_the_grammar(language, phrases):
    from curation.lab.synth.languages import translated_caption
    from curation.lab.synth.world import Scene

    rng = np.random.default_rng(0)
    scene = Scene(shape="square", colour="red", count=1, texture="stripes", background="blue", layout_seed=0)
    captions = {translated_caption(scene, language, rng) for _ in range(60)}
    assert len(captions) >= 4  # several templates
    assert all(any(p in c for p in phrases) for c in captions), captions


def test_translated_captions_name_every_attribute():
    from curation.lab.synth.languages import LANGUAGES, SHAPE_NOUNS, translated_caption

    counts = {
        "de": ("zwei", "drei", "vier"),
        "fr": ("deux", "trois", "quatre"),
        "es": ("dos", "tres", "cuatro"),
        "it": ("due", "tre", "quattro"),
        "pt": ("dois", "duas", "três", "quatro"),
        "nl": ("twee", "drie", "vier"),
        "sv": ("två", "tre", "fyra"),
    }
    rng = np.random.default_rng(1)
    for _ in range(300):
        scene = sample_scene(rng)
        for language in LANGUAGES:
            caption = translated_caption(scene, language, rng)
            noun = SHAPE_NOUNS[language][scene.shape]
            words = caption.replace(",", " ").replace(":", " ").split()
            form = noun.singular if scene.count == 1 else noun.plural
            assert form in words or (language == "de" and form + "n" in words), caption  # German dative plural
            if scene.count > 1:
                assert any(c in words for c in counts[language]), caption
            assert "{" not in caption and "  " not in caption, caption
