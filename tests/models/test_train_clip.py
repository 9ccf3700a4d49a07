"""A shortened `curate train-clip` run writes a folder the pipeline reloads offline."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from curation.cli import main
from curation.config import HeadConfig, ModelConfig
from curation.models.clip import load_clip
from curation.models.heads import load_head
from curation.models.towers import ConvStem, create_model, load_model_dir

pytestmark = pytest.mark.slow


def test_short_train_clip_run_gives_a_loadable_folder(tmp_path):
    out = tmp_path / "tiny"
    result = CliRunner().invoke(
        main,
        [
            "train-clip",
            "--output",
            str(out),
            "--images",
            "300",
            "--steps",
            "2",
            "--batch-size",
            "32",
            "--head-images",
            "200",
            "--eval-pairs",
            "100",
            "--seed",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"open_clip_config.json", "open_clip_model.safetensors", "MODEL_CARD.md", "metrics.json", "heads"} <= names
    model, _ = load_model_dir(out)
    assert model.visual.image_size == (64, 64)
    assert isinstance(model.visual.conv1, ConvStem)
    clip = load_clip(ModelConfig(pretrained=str(out), threads=1))
    assert clip.info.embed_dim == 128
    for name in ("unsafe", "watermark", "aesthetic"):
        assert load_head(out / "heads" / f"{name}.safetensors").features == ("embedding", "tokens", "stem")
    card = (out / "MODEL_CARD.md").read_text()
    assert "R@1" in card and "--steps 2" in card and "seed 5" in card
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert 0.0 <= metrics["retrieval_r1_100"] <= 1.0
    # a head trained here plugs into the pipeline by path
    HeadConfig(name="unsafe", weights=str(out / "heads" / "unsafe.safetensors"), threshold=0.5)


def test_init_from_goes_on_training_that_clip_and_a_bad_folder_names_the_fix(tmp_path):
    short = ["--images", "64", "--batch-size", "16", "--eval-pairs", "100", "--no-heads"]
    first, second = tmp_path / "first", tmp_path / "second"
    result = CliRunner().invoke(main, ["train-clip", "--output", str(first), "--steps", "2", *short])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        main,
        [
            "train-clip",
            "--output",
            str(second),
            "--steps",
            "1",
            "--lr",
            "1e-9",
            "--init-from",
            str(first),
            "--seed",
            "3",
            *short,
        ],
    )
    assert result.exit_code == 0, result.output
    before, after = load_model_dir(first)[0].state_dict(), load_model_dir(second)[0].state_dict()
    fresh = create_model("curation-tiny").state_dict()
    name = "visual.proj"
    assert torch.allclose(before[name].float(), after[name].float(), atol=1e-3)  # one step at a tiny lr: the same CLIP
    assert not torch.allclose(fresh[name].float(), after[name].float(), atol=1e-3)
    card = (second / "MODEL_CARD.md").read_text()
    assert "continued from the CLIP in first/" in card
    # the card gives the whole recipe: the command that trained `first`, then this one
    assert "--steps 2 --batch-size 16" in card and "then `curate train-clip" in card and f"--init-from {first}" in card

    result = CliRunner().invoke(
        main, ["train-clip", "--output", str(tmp_path / "third"), "--init-from", str(tmp_path), *short]
    )
    assert result.exit_code != 0
    assert "holds no trained CLIP" in result.output and "give a folder curate train-clip wrote" in result.output


@pytest.mark.parametrize("seed", [0, 1])
def test_sibling_training_images_are_one_attribute_apart_at_the_same_size(seed):
    from curation.lab.train_clip import render_set

    data = render_set(12, seed=seed, stream="clip-train", mix=(1.0, 0, 0, 0), size=64, workers=1, pairing="siblings")
    for first, second in zip(data.scenes[0::2], data.scenes[1::2]):
        changed = [k for k, v in first.attributes().items() if second.attributes()[k] != v]
        assert len(changed) == 1 and first.layout_seed == second.layout_seed
        assert second.colour != second.background
    assert data.pixels.shape == (12, 64, 64, 3)
    # siblings differ only where the changed attribute shows: never the same pixels
    assert all((data.pixels[i] != data.pixels[i + 1]).any() for i in range(0, 12, 2))


@pytest.mark.parametrize("seed", [0, 1])
def test_lookalike_training_images_share_colours_and_texture_but_not_form_or_layout(seed):
    from curation.lab.train_clip import render_set

    data = render_set(12, seed=seed, stream="clip-train", mix=(1.0, 0, 0, 0), size=64, workers=1, pairing="lookalikes")
    for first, second in zip(data.scenes[0::2], data.scenes[1::2]):
        assert (first.colour, first.background, first.texture) == (second.colour, second.background, second.texture)
        assert (first.shape, first.count) != (second.shape, second.count)
        assert first.layout_seed != second.layout_seed
    assert all((data.pixels[i] != data.pixels[i + 1]).any() for i in range(0, 12, 2))


@pytest.mark.parametrize("seed", [0, 1])
def test_shape_sibling_pairs_are_another_shape_at_the_same_layout_or_a_lookalike(seed):
    from curation.lab.train_clip import render_set

    data = render_set(
        40, seed=seed, stream="clip-train", mix=(1.0, 0, 0, 0), size=64, workers=1, pairing="shape_siblings"
    )
    kinds = []
    for first, second in zip(data.scenes[0::2], data.scenes[1::2]):
        assert (first.colour, first.background, first.texture) == (second.colour, second.background, second.texture)
        changed = {k for k, v in first.attributes().items() if second.attributes()[k] != v}
        if first.layout_seed == second.layout_seed:
            assert changed == {"shape"}
            kinds.append("shape sibling")
        else:
            assert changed and changed <= {"shape", "count"}
            kinds.append("lookalike")
    assert set(kinds) == {"shape sibling", "lookalike"}


def test_attribute_mix_is_parsed_by_name_and_bad_ones_name_the_fix():
    from curation.errors import UserError
    from curation.lab.train_clip import ATTRIBUTES, format_attribute_mix, parse_attribute_mix

    mix = parse_attribute_mix("shape=4, colour=0.5,background=0.5")
    assert mix == (4.0, 0.5, 1.0, 1.0, 0.5) and len(mix) == len(ATTRIBUTES)
    assert parse_attribute_mix(format_attribute_mix(mix)) == mix
    for bad in ("shap=2", "shape=-1", "shape=big", "shape=0,colour=0,count=0,texture=0,background=0"):
        with pytest.raises(UserError, match="--attribute-mix"):
            parse_attribute_mix(bad)


def test_siblings_and_lookalikes_together_is_a_user_error():
    from curation.errors import UserError
    from curation.lab.train_clip import TrainSettings

    assert TrainSettings(lookalikes=True).pairing == "lookalikes" and TrainSettings().pairing is None
    with pytest.raises(UserError, match="choose one"):
        TrainSettings(siblings=True, lookalikes=True).pairing


def test_augmented_batch_mirrors_flips_and_reframes_reproducibly():
    import numpy as np
    import torch

    from curation.lab.train_clip import augment_batch

    images = torch.arange(8 * 3 * 16 * 16, dtype=torch.float32).reshape(8, 3, 16, 16)
    mirrored_only = augment_batch(images.clone(), np.random.default_rng(0), full=False)
    for i in range(8):  # each image is itself or its mirror image
        assert torch.equal(mirrored_only[i], images[i]) or torch.equal(mirrored_only[i], images[i].flip(-1))
    assert not torch.equal(mirrored_only, images)
    full = augment_batch(images.clone(), np.random.default_rng(0), full=True)
    assert full.shape == images.shape
    dihedral = [images[i].flip(d) for i in range(8) for d in ((-1,), (-2,), (-1, -2))] + list(images)
    reframed = [i for i in range(8) if not any(torch.equal(full[i], d) for d in dihedral)]
    assert reframed  # some images were cropped and resized back, not merely mirrored or flipped
    assert torch.equal(full, augment_batch(images.clone(), np.random.default_rng(0), full=True))


def test_attribute_probes_learn_each_scene_attribute_from_the_embedding():
    import numpy as np

    from curation.lab.train_clip import ATTRIBUTES, TrainSettings, attribute_labels, render_set, train_model

    data = render_set(64, seed=3, stream="clip-train", mix=(1.0, 0, 0, 0), size=64, workers=1, pairing="lookalikes")
    labels = attribute_labels(data.scenes)
    assert labels.shape == (64, len(ATTRIBUTES))
    for row, scene in zip(labels, data.scenes):
        assert [values[i] for values, i in zip(ATTRIBUTES.values(), row)] == [
            getattr(scene, name) for name in ATTRIBUTES
        ]
    settings = TrainSettings(steps=40, batch_size=32, warmup=4, lookalikes=True, attribute_weight=4.0, heads=False)
    _, metrics = train_model(data, settings, log=lambda _: None)
    chance = np.mean([np.log(len(values)) for values in ATTRIBUTES.values()])  # the probes' loss before they learn
    assert metrics["final_attribute_loss"] < 0.75 * chance
    _, without = train_model(data, TrainSettings(steps=2, batch_size=32, warmup=1, heads=False), log=lambda _: None)
    assert "final_attribute_loss" not in without


def test_probes_first_teach_the_tower_before_the_captions_arrive():
    import numpy as np

    from curation.lab.train_clip import ATTRIBUTES, TrainSettings, render_set, train_model

    data = render_set(64, seed=4, stream="clip-train", mix=(1.0, 0, 0, 0), size=64, workers=1, pairing="shape_siblings")
    lines: list[str] = []
    settings = TrainSettings(
        steps=1,
        probe_steps=40,
        batch_size=32,
        warmup=4,
        shape_siblings=True,
        attribute_weight=4.0,
        attribute_mix=(4.0, 0.5, 1.0, 1.0, 0.5),
        heads=False,
    )
    _, metrics = train_model(data, settings, log=lines.append)
    assert sum("probes first" in line for line in lines) == 3  # steps 1, 21 and 40
    chance = np.average([np.log(len(v)) for v in ATTRIBUTES.values()], weights=settings.attribute_mix)
    # after a single CLIP step, the probes already read the attributes the first phase taught the tower
    assert metrics["final_attribute_loss"] < 0.75 * chance
