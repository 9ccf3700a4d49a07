"""Command line: parses arguments and calls the library. User errors print one line and exit 2."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from curation.errors import UserError



class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="curation")
def main() -> None:
    """curation: filter, embed, deduplicate and shard image-text pairs on Ray."""


@main.command()
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@click.option("--input", "input_url", required=True, help="Input shards: a directory or URL of img2dataset output.")
@click.option("--output", "output_url", required=True, help="Output directory or URL.")
@click.option("--set", "overrides", multiple=True, metavar="a.b=VALUE", help="Override a config value (repeatable).")
def run(config_path: str, input_url: str, output_url: str, overrides: tuple[str, ...]) -> None:
    """Run a curation job described by CONFIG.yaml."""
    from curation.config import load_config

    cfg = load_config(config_path, overrides)
    from curation.runner import run_job

    result = run_job(cfg, input_url, output_url)
    _print_funnel(result.manifest, output_url)


@main.command()
@click.option("--output", "output_dir", required=True, type=click.Path(file_okay=False), help="Directory to write to.")
@click.option("--rows", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--format", "fmt", default="webdataset", show_default=True, type=click.Choice(["webdataset", "parquet"]))
@click.option("--shard-size", default=500, show_default=True, type=click.IntRange(min=1))
def synth(output_dir: str, rows: int, seed: int, fmt: str, shard_size: int) -> None:
    """Generate a synthetic world of image-text pairs with planted defects (and truth.json)."""
    from curation.synth import generate

    truth = generate(output_dir, rows=rows, seed=seed, fmt=fmt, shard_size=shard_size)
    click.echo(f"wrote {truth['rows']} pairs in {len(truth['shards'])} {fmt} shards to {output_dir} (+ truth.json)")


@main.command()
@click.option("--output", "output_dir", default="demo-output", show_default=True, type=click.Path(file_okay=False))
@click.option("--rows", default=3000, show_default=True, type=click.IntRange(min=1))
def demo(output_dir: str, rows: int) -> None:
    """Generate a small synthetic dataset and curate it with pipelines/demo.yaml."""
    from curation.demo import run_demo

    run_demo(Path(output_dir), rows=rows, log=click.echo)


def _print_funnel(manifest: dict, output_url: str) -> None:
    f = manifest["funnel"]
    click.echo(f"input {f['input']}  kept {f['kept']}  rejected {f['rejected']}")
    for reason, count in f["rejected_by_reason"].items():
        click.echo(f"  {reason:<28} {count}")
    click.echo(f"output: {output_url.rstrip('/')}/kept/ (+ rejected/, _manifest.json)")


if __name__ == "__main__":
    main()
