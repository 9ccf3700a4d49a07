"""Command line: parses arguments and calls the library. User errors print one line and exit 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from curation.allocator import allocator_env

# Before anything loads pyarrow: Arrow's mimalloc reads its settings once, from the environment, and
# the local Ray this process may start inherits them (curation/allocator.py).
os.environ.update(allocator_env())

from curation.errors import UserError  # noqa: E402


class _Group(click.Group):
    """User errors (and storage errors an operator can fix: a full or read-only disk, no access, no
    credentials) print one line, with no credentials in any URL it names, and exit 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            _fail(str(exc))
        except Exception as exc:
            from curation.io.storage import storage_problem_in

            problem = storage_problem_in(exc)
            if problem is None:
                raise
            _fail(str(problem))


def _fail(message: str) -> None:
    from curation.io.urls import strip_credentials

    click.echo(f"error: {strip_credentials(message)}", err=True)
    sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="curation")
def main() -> None:
    """curation: filter, embed, deduplicate and shard image-text pairs on Ray."""


@main.command()
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@click.option("--input", "input_url", required=True, help="Input shards: a directory or URL of img2dataset output.")
@click.option("--output", "output_url", required=True, help="Output directory or URL.")
@click.option(
    "--address",
    default=None,
    help="Ray cluster address, e.g. ray://head:10001 (else run.address, RAY_ADDRESS or a local Ray).",
)
@click.option("--set", "overrides", multiple=True, metavar="a.b=VALUE", help="Override a config value (repeatable).")
@click.option(
    "--rescore",
    is_flag=True,
    help="Resume even if the work dir's shards were scored by another model or version: score them again.",
)
def run(
    config_path: str, input_url: str, output_url: str, address: str | None, overrides: tuple[str, ...], rescore: bool
) -> None:
    """Run a curation job described by CONFIG.yaml."""
    from curation.config import load_config

    cfg = load_config(config_path, [*overrides, *([f"run.address={address}"] if address else [])])
    from curation.runner import run_job

    result = run_job(cfg, input_url, output_url, rescore=rescore)
    _print_funnel(result.manifest, output_url)


def _redo_command(phase: str, summary: str):
    @main.command(phase, help=summary)
    @click.argument("output_url", metavar="OUTPUT")
    @click.option(
        "--set", "overrides", multiple=True, metavar="a.b=VALUE", help="Override a config value (repeatable)."
    )
    @click.option("--input", "input_url", default=None, help="The scored input, where it moved (default: the run's).")
    @click.option("--address", default=None, help="Ray cluster address (else run.address, RAY_ADDRESS or a local Ray).")
    def redo(output_url: str, overrides: tuple[str, ...], input_url: str | None, address: str | None) -> None:
        from curation.runner import redo_phases

        overrides = (*overrides, *([f"run.address={address}"] if address else []))
        result = redo_phases(output_url, overrides, phase, input_url=input_url, log=click.echo)
        _print_funnel(result.manifest, output_url)

    return redo


_redo_command(
    "dedup",
    "Deduplicate OUTPUT again from its scored shards (no rescoring), e.g. with --set dedup.semantic_eps=0.1, "
    "and write it again.",
)
_redo_command("write", "Write OUTPUT's kept/ and rejected/ again from its scored shards and last dedup decisions.")


@main.command()
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@click.option(
    "--input", "input_url", required=True, help="This refresh's new input shards (a directory or URL prefix)."
)
@click.option("--outputs", "root", required=True, help="Refresh root: dated outputs <root>/YYYY-MM-DD/ live here.")
@click.option("--date", "date", default=None, help="This refresh's date, YYYY-MM-DD (default: today, UTC).")
@click.option("--address", default=None, help="Ray cluster address (else run.address, RAY_ADDRESS or a local Ray).")
@click.option("--set", "overrides", multiple=True, metavar="a.b=VALUE", help="Override a config value (repeatable).")
def refresh(
    config_path: str, input_url: str, root: str, date: str | None, address: str | None, overrides: tuple[str, ...]
) -> None:
    """A scheduled refresh: curate new input into <root>/<date>/, deduplicated against the latest
    complete earlier output under <root> (which stays untouched)."""
    from curation.config import load_config
    from curation.refresh import parse_date, previous_output, refresh_config

    cfg = load_config(config_path, [*overrides, *([f"run.address={address}"] if address else [])])
    day = parse_date(date)
    previous = previous_output(root, day)
    from curation.io.urls import strip_credentials

    click.echo(strip_credentials(f"refresh {day}: deduplicating against {previous or 'nothing (first refresh)'}"))
    from curation.runner import run_job

    output_url = f"{root.rstrip('/')}/{day}"
    result = run_job(refresh_config(cfg, previous), input_url, output_url)
    _print_funnel(result.manifest, output_url)


@main.command("compact-state")
@click.argument("output")
@click.option("--address", default=None, help="Ray cluster address (else RAY_ADDRESS or a local Ray).")
def compact_state_cmd(output: str, address: str | None) -> None:
    """Fold the earlier refreshes OUTPUT's dedup state builds on into OUTPUT/_state/, so that they may be
    deleted (a refresh does it by itself once dedup.state_compact_after earlier outputs pile up)."""
    from curation.io.urls import strip_credentials
    from curation.phases.state import compact_state

    compact_state(output, address, log=lambda line: click.echo(strip_credentials(line)))


@main.command()
@click.option("--output", "output_dir", required=True, type=click.Path(file_okay=False), help="Directory to write to.")
@click.option("--rows", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--format", "fmt", default="webdataset", show_default=True, type=click.Choice(["webdataset", "parquet"]))
@click.option("--shard-size", default=500, show_default=True, type=click.IntRange(min=1))
def synth(output_dir: str, rows: int, seed: int, fmt: str, shard_size: int) -> None:
    """Generate a synthetic world of image-text pairs with planted defects (and truth.json)."""
    from curation.lab.synth import generate

    try:
        truth = generate(output_dir, rows=rows, seed=seed, fmt=fmt, shard_size=shard_size)
    except OSError as exc:
        from curation.io.storage import storage_problem

        problem = storage_problem(exc, output_dir)
        raise problem or UserError(
            f"cannot write {output_dir} ({exc.strerror or exc}): choose a writable --output"
        ) from None
    click.echo(f"wrote {truth['rows']} pairs in {len(truth['shards'])} {fmt} shards to {output_dir} (+ truth.json)")


@main.command()
@click.option("--output", "output_dir", default="demo-output", show_default=True, type=click.Path(file_okay=False))
@click.option("--rows", default=3000, show_default=True, type=click.IntRange(min=1))
def demo(output_dir: str, rows: int) -> None:
    """Generate a small synthetic dataset and curate it with pipelines/demo.yaml."""
    from curation.lab.demo import run_demo

    run_demo(Path(output_dir), rows=rows, log=click.echo)


@main.command("train-head")
@click.option("--name", required=True, help="Head name, e.g. unsafe, watermark, aesthetic.")
@click.option(
    "--data",
    "data_paths",
    required=True,
    multiple=True,
    type=click.Path(exists=True),
    help="Parquet file or folder with image bytes (image or jpg column); repeatable.",
)
@click.option("--label-column", default=None, help="Column holding the label (bool/0-1, or strings: see --positive).")
@click.option(
    "--truth",
    "truth_path",
    default=None,
    type=click.Path(dir_okay=False, exists=True),
    help="Label rows from a synthetic world's truth.json instead of a column.",
)
@click.option("--positive", default=None, help="Label value of the positive class (default: the head's name).")
@click.option("--negate", is_flag=True, help="Score the absence of --positive (e.g. aesthetic = not low_aesthetic).")
@click.option(
    "--output",
    "output_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the .safetensors head.",
)
@click.option(
    "--config", "config_path", default=None, type=click.Path(dir_okay=False), help="Config whose model section to use."
)
@click.option("--set", "overrides", multiple=True, metavar="a.b=VALUE", help="Override a config value (repeatable).")
@click.option("--hidden", default="64", show_default=True, help="Hidden layer sizes, e.g. 256,64; 0: a linear head.")
def train_head(
    name: str,
    data_paths: tuple[str, ...],
    label_column: str | None,
    truth_path: str | None,
    positive: str | None,
    negate: bool,
    output_path: str,
    config_path: str | None,
    overrides: tuple[str, ...],
    hidden: str,
) -> None:
    """Train a classifier head (an MLP of any hidden sizes over the embedding pass) from labelled Parquet."""
    from curation.config import load_config
    from curation.lab.train_head import HeadData, train_head_from_parquet

    cfg = load_config(config_path, overrides)
    data = HeadData(
        paths=data_paths, label_column=label_column, truth_path=truth_path, positive=positive or name, negate=negate
    )
    report = train_head_from_parquet(name, data, cfg.model, output_path, log=click.echo, hidden=hidden)
    click.echo(
        f"wrote {output_path}: held-out precision {report['precision']:.3f} recall {report['recall']:.3f} "
        f"at threshold 0.5; use it with heads: [{{name: {name}, weights: {output_path}, threshold: 0.5}}]"
    )


@main.command("eval")
@click.argument("output", metavar="OUTPUT")
@click.option(
    "--truth", "truth_path", required=True, type=click.Path(dir_okay=False), help="truth.json of the synthetic input."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--retrieval", is_flag=True, help="Also measure the shipped CLIP's image->text R@1 (100 candidates).")
def eval_cmd(output: str, truth_path: str, as_json: bool, retrieval: bool) -> None:
    """Precision and recall per planted defect kind, from a run's kept/ and rejected/ and the truth."""
    import json

    from curation.lab.eval import (
        clean_rejections,
        evaluate,
        format_table,
        load_truth,
        missing_keys,
        output_heads,
        read_output,
        redacted_keys,
        shipped_model_retrieval,
    )

    truth = load_truth(truth_path)
    rows = read_output(output)
    result = evaluate(rows, truth, redacted_keys(output), heads=output_heads(output))
    measured = shipped_model_retrieval() if retrieval else None
    if as_json:
        if measured:
            result["retrieval_r1_100"] = measured["retrieval_r1_100"]
        click.echo(json.dumps(result, sort_keys=False))
    else:
        click.echo(format_table(result, clean_rejections(rows, truth), missing_keys(rows, truth), measured))


@main.command("proxy-eval")
@click.option(
    "--output",
    "output_dir",
    default="proxy-eval",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Working folder: pool/, curated/, result.json.",
)
@click.option(
    "--config",
    "config_path",
    default=None,
    type=click.Path(dir_okay=False, exists=True),
    help="The curation job's config (default: pipelines/demo.yaml).",
)
@click.option(
    "--rows", "pool_rows", default=3000, show_default=True, type=click.IntRange(min=10), help="Raw pool size."
)
@click.option(
    "--test-rows", default=1000, show_default=True, type=click.IntRange(min=100), help="Held-out clean pairs."
)
@click.option("--steps", default=50, show_default=True, type=click.IntRange(min=1), help="Training steps per arm.")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(min=2))
@click.option("--seed", default=0, show_default=True, type=int)
def proxy_eval_cmd(
    output_dir: str, config_path: str | None, pool_rows: int, test_rows: int, steps: int, batch_size: int, seed: int
) -> None:
    """DataComp in miniature: train the tiny CLIP on the raw pool, a random subset and the curated subset
    (equal steps); zero-shot and retrieval on a held-out clean set. Prints a table, then one JSON line."""
    from curation.lab.proxy_eval import ProxySettings, format_table, proxy_eval, result_json_line

    settings = ProxySettings(
        pool_rows=pool_rows, test_rows=test_rows, steps=steps, batch_size=batch_size, seed=seed, config_path=config_path
    )
    result = proxy_eval(output_dir, settings, log=click.echo)
    click.echo(format_table(result))
    click.echo(result_json_line(result))


@main.command("report")
@click.argument("output", metavar="OUTPUT")
@click.option(
    "--out",
    "out_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Where to write (default: OUTPUT/report.html).",
)
@click.option(
    "--max-rows", default=4000, show_default=True, type=click.IntRange(min=10), help="Rows sampled for plots and audit."
)
def report_cmd(output: str, out_file: str | None, max_rows: int) -> None:
    """A static HTML report of a finished output: funnel, score histograms with thresholds, sample
    grids, near-threshold rows, bias/diversity audit, cluster sizes, config and timings."""
    from curation.report import write_report

    click.echo(f"wrote {write_report(output, out_file, max_rows=max_rows)}")


@main.command("export")
@click.argument("output", metavar="OUTPUT")
@click.option(
    "--format",
    "fmt",
    default=None,
    type=click.Choice(["webdataset", "embeddings"]),
    help="webdataset: img2dataset-style tars (open_clip's trainer reads them); embeddings: clip-retrieval's .npy.",
)
@click.option(
    "--rejected-images",
    is_flag=True,
    help="Instead of --format: rejected/ with the image bytes the run left out of it (output.rejected_images: "
    "false) read back from its input, checked by sha256 (default --to: OUTPUT/rejected_images/).",
)
@click.option(
    "--input",
    "input_url",
    default=None,
    help="With --rejected-images: where the run's input lies now (default: the URLs in its manifest).",
)
@click.option("--to", "to_url", default=None, help="Folder or URL to write (default: OUTPUT/<format>/).")
@click.option(
    "--resize",
    type=click.Choice(["keep_ratio", "center_crop", "border"]),
    default=None,
    help="Resize the exported images as img2dataset does (needs --size).",
)
@click.option("--size", type=click.IntRange(min=1), default=None, help="Pixels for --resize.")
@click.option("--quality", type=click.IntRange(1, 100), default=None, help="JPEG/WebP quality for --resize (95).")
@click.option("--image-format", type=click.Choice(["jpg", "png", "webp"]), default=None, help="For --resize (jpg).")
@click.option("--shard-rows", type=click.IntRange(min=1), default=None, help="Rows per shard (default: the run's).")
@click.option("--shard-mb", type=click.FloatRange(min=0, min_open=True), default=None, help="Also cap a tar's MB.")
@click.option("--address", default=None, help="Ray cluster address (else RAY_ADDRESS or a local Ray).")
def export_cmd(
    output: str,
    fmt: str | None,
    rejected_images: bool,
    input_url: str | None,
    to_url: str | None,
    resize: str | None,
    size: int | None,
    quality: int | None,
    image_format: str | None,
    shard_rows: int | None,
    shard_mb: float | None,
    address: str | None,
) -> None:
    """Write training-ready files from a finished output's kept/ rows, or its rejected/ rows with their
    image bytes (docs/export.md)."""
    if (fmt is None) == (not rejected_images):
        raise UserError("give one of --format webdataset|embeddings and --rejected-images")
    if input_url is not None and not rejected_images:
        raise UserError("--input goes with --rejected-images: the other exports read kept/ only")
    if rejected_images:
        if any(v is not None for v in (resize, size, quality, image_format, shard_rows, shard_mb)):
            raise UserError("--rejected-images writes rejected/'s files as they are: no resize or shard options")
        fmt = "rejected_images"
    if (resize is None) != (size is None):
        raise UserError("--resize and --size go together: e.g. --resize center_crop --size 256")
    if resize is None and (quality is not None or image_format is not None):
        raise UserError("--quality and --image-format apply to resized images: give --resize and --size too")
    overrides: dict = {}
    if resize is not None:
        overrides["resize"] = {"mode": resize, "size": size, "quality": quality or 95, "format": image_format or "jpg"}
    if shard_rows is not None:
        overrides["shard_rows"] = shard_rows
    if shard_mb is not None:
        overrides["shard_mb"] = shard_mb
    from curation.runner import export_output

    export_output(output, fmt, overrides, to_url, address, log=click.echo, input_url=input_url)


@main.group()
def bench() -> None:
    """Benchmarks: figures and ratios measured in one run; the last line printed is JSON."""


@bench.command("dedup")
@click.option("--n", default=100_000, show_default=True, type=click.IntRange(min=100), help="Embeddings.")
@click.option("--dim", default=512, show_default=True, type=click.IntRange(min=2), help="Embedding width.")
@click.option("--scaling", is_flag=True, help="Also time n/10 rows and report time(n) / time(n/10).")
@click.option("--seed", default=0, show_default=True, type=int)
def bench_dedup(n: int, dim: int, scaling: bool, seed: int) -> None:
    """Semantic dedup (k-means + in-cluster cosine) on synthetic embeddings with planted duplicates."""
    from curation.lab.bench.dedup import dedup_command

    dedup_command.callback(n=n, dim=dim, scaling=scaling, seed=seed)


def _add_bench_commands() -> None:
    """Benchmarks (curation/lab/bench/), and the lab's train-clip, convert-head and fit-domain: defined beside
    their code."""
    from curation.lab.bench.assign import assign_command
    from curation.lab.bench.decode import decode_command
    from curation.lab.bench.embed import embed_command
    from curation.lab.bench.faces import faces_command
    from curation.lab.bench.language import language_command
    from curation.lab.bench.memory import memory_command
    from curation.lab.bench.pipeline import pipeline_command
    from curation.lab.bench.scale import scale_command
    from curation.lab.convert_head import convert_head_command
    from curation.lab.domain import fit_domain_command
    from curation.lab.train_clip_command import train_clip_command

    for command in (
        embed_command,
        pipeline_command,
        decode_command,
        memory_command,
        language_command,
        faces_command,
        scale_command,
        assign_command,
    ):
        bench.add_command(command)
    for command in (train_clip_command, convert_head_command, fit_domain_command):
        main.add_command(command)


_add_bench_commands()


def _print_funnel(manifest: dict, output_url: str) -> None:
    from curation.io.urls import strip_credentials

    output_url = strip_credentials(output_url)
    f = manifest["funnel"]
    click.echo(f"input {f['input']}  kept {f['kept']}  rejected {f['rejected']}")
    for reason, count in f["rejected_by_reason"].items():
        click.echo(f"  {reason:<28} {count}")
    click.echo(f"output: {output_url.rstrip('/')}/kept/ (+ rejected/, _manifest.json)")


if __name__ == "__main__":
    main()
