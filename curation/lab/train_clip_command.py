"""`curate train-clip`: the lab's command that trains the shipped tiny CLIP and its heads (registered on
the CLI by curation/cli.py, which alone imports the lab)."""

from __future__ import annotations

import click

from curation.errors import UserError


@click.command("train-clip")
@click.option(
    "--output",
    "output_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to write (open_clip_config.json, open_clip_model.safetensors, heads/, MODEL_CARD.md).",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--images", default=16_000, show_default=True, type=click.IntRange(min=1), help="Distinct training images."
)
@click.option("--steps", default=320, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=2))
@click.option("--head-images", default=24_000, show_default=True, type=click.IntRange(min=10))
@click.option("--eval-pairs", default=1_000, show_default=True, type=click.IntRange(min=100))
@click.option("--no-heads", is_flag=True, help="Train the CLIP only.")
@click.option("--heads-only", is_flag=True, help="Keep the CLIP in --output (and its settings); retrain its heads.")
@click.option(
    "--siblings", is_flag=True, help="Train on scene pairs one attribute apart, in the same batch (hard negatives)."
)
@click.option(
    "--lookalikes",
    is_flag=True,
    help="Train on scene pairs of the same colours and texture with another shape or count and layout, in the same batch.",
)
@click.option(
    "--shape-siblings",
    is_flag=True,
    help="Train on scene pairs, half the same scene with another shape (same layout), half lookalikes, in the same batch.",
)
@click.option(
    "--augment", is_flag=True, help="Also flip images upside down and reframe them at random (besides mirroring)."
)
@click.option(
    "--instance-weight",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="Weight of an image-to-image contrastive term (two augmented views of each image).",
)
@click.option(
    "--instance-temperature",
    default=0.05,
    show_default=True,
    type=click.FloatRange(min=0.001),
    help="Temperature of the image-to-image term.",
)
@click.option(
    "--attribute-weight",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="Weight of linear probes that learn each scene's shape, colour, count, texture and background from the image embedding.",
)
@click.option(
    "--attribute-mix", default="", help="The probes' relative weights, e.g. shape=4,count=1 (unnamed ones weigh 1)."
)
@click.option(
    "--probe-steps",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Steps of the image tower with the probes alone before the CLIP training (needs --attribute-weight).",
)
@click.option(
    "--init-from",
    default=None,
    type=click.Path(file_okay=False),
    help="Go on training the CLIP of this folder (one curate train-clip wrote) instead of a fresh one.",
)
@click.option(
    "--lr",
    default=1e-3,
    show_default=True,
    type=click.FloatRange(min=0.0, min_open=True),
    help="Peak learning rate (lower it to go on training with --init-from).",
)
def train_clip_command(
    output_dir: str,
    seed: int,
    images: int,
    steps: int,
    batch_size: int,
    head_images: int,
    eval_pairs: int,
    no_heads: bool,
    heads_only: bool,
    siblings: bool,
    lookalikes: bool,
    shape_siblings: bool,
    augment: bool,
    instance_weight: float,
    instance_temperature: float,
    attribute_weight: float,
    attribute_mix: str,
    probe_steps: int,
    init_from: str | None,
    lr: float,
) -> None:
    """Train the tiny CLIP (and its heads) on the synthetic world, from scratch or further with --init-from."""
    from curation.lab.train_clip import TrainSettings, parse_attribute_mix
    from curation.lab.train_clip import train_clip as run

    if probe_steps and not attribute_weight:
        raise UserError("--probe-steps trains the attribute probes first: give --attribute-weight too")
    mix = parse_attribute_mix(attribute_mix) if attribute_mix else TrainSettings().attribute_mix
    settings = TrainSettings(
        seed=seed,
        images=images,
        steps=steps,
        batch_size=batch_size,
        head_images=head_images,
        eval_pairs=eval_pairs,
        heads=not no_heads,
        warmup=min(30, max(1, steps // 10)),
        heads_only=heads_only,
        siblings=siblings,
        lookalikes=lookalikes,
        shape_siblings=shape_siblings,
        augment=augment,
        instance_weight=instance_weight,
        instance_temperature=instance_temperature,
        attribute_weight=attribute_weight,
        attribute_mix=mix,
        probe_steps=probe_steps,
        init_from=init_from,
        lr=lr,
    )
    run(output_dir, settings, log=click.echo)
    click.echo(f"wrote {output_dir} (reload it with model.pretrained: {output_dir})")
