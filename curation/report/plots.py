"""The report's figures: matplotlib on the Agg backend (no display), returned as base64 PNG strings
that the HTML embeds, so the report is one file that opens with no server."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from curation.report.data import Threshold  # noqa: E402

KEPT, REJECTED = "#2e7d32", "#c62828"
LINE_COLOURS = ["#1565c0", "#ef6c00", "#6a1b9a", "#00838f"]


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def funnel(stages: list[tuple[str, int]], input_rows: int) -> str:
    """Rows remaining after each stage, as horizontal bars from the input down to kept."""
    labels = ["input"] + [name for name, _ in stages]
    remaining = [input_rows]
    for _, rejected in stages:
        remaining.append(remaining[-1] - rejected)
    fig, ax = plt.subplots(figsize=(7, 0.42 * len(labels) + 0.8))
    y = np.arange(len(labels))[::-1]
    ax.barh(y, remaining, color=[KEPT if i == len(labels) - 1 else "#90a4ae" for i in range(len(labels))])
    for yi, value in zip(y, remaining):
        ax.text(value, yi, f" {value:,}", va="center", fontsize=9)
    ax.set_yticks(y, [f"after {label}" if label != "input" else label for label in labels])
    ax.set_xlabel("rows remaining")
    ax.set_xlim(0, max(remaining) * 1.15 or 1)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def histogram(sample: pa.Table, column: str, thresholds: list[Threshold]) -> str:
    """The column's distribution in the sample, kept and rejected stacked, every cut on it marked."""
    values = sample.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
    status = np.array(sample.column("status").to_pylist())
    finite = np.isfinite(values)
    fig, ax = plt.subplots(figsize=(6, 3.0))
    if finite.any():
        bins = np.histogram_bin_edges(values[finite], bins=40)
        ax.hist(
            [values[finite & (status == "kept")], values[finite & (status == "rejected")]],
            bins=bins,
            stacked=True,
            color=[KEPT, REJECTED],
            label=["kept", "rejected"],
        )
    for i, t in enumerate(thresholds):
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        ax.axvline(t.value, color=colour, linestyle="--", linewidth=1.6, label=f"threshold: {t.label}")
    ax.set_xlabel(column)
    ax.set_ylabel("sampled rows")
    ax.spines[["top", "right"]].set_visible(False)
    if finite.any() or thresholds:
        ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def cluster_sizes(sizes: np.ndarray, source: str) -> str:
    """Distribution of cluster sizes (log-scaled counts when they spread widely)."""
    fig, ax = plt.subplots(figsize=(6, 2.8))
    ax.hist(sizes, bins=min(40, max(5, len(sizes) // 2)), color="#5c6bc0")
    ax.set_xlabel(f"rows per cluster ({source})")
    ax.set_ylabel("clusters")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def group_rates(names: list[str], kept: list[int], rejected: list[int], overall: float, title: str) -> str:
    """Kept vs rejected per audit group, the overall rejection rate as a line."""
    fig, ax = plt.subplots(figsize=(7, 0.34 * len(names) + 0.9))
    y = np.arange(len(names))[::-1]
    totals = np.maximum(np.array(kept) + np.array(rejected), 1)
    ax.barh(y, np.array(kept) / totals, color=KEPT, label="kept")
    ax.barh(y, np.array(rejected) / totals, left=np.array(kept) / totals, color=REJECTED, label="rejected")
    ax.axvline(1 - overall, color="black", linestyle="--", linewidth=1, label=f"overall rejected {overall:.0%}")
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the group's sampled rows")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def thumbnail(image: bytes | None, size: int = 112) -> str | None:
    """A small JPEG of the image, base64; None when it is missing or does not decode."""
    if not image:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image)) as im:
            im.draft("RGB", (size, size))
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buffer = io.BytesIO()
            im.save(buffer, format="JPEG", quality=80)
    except Exception:  # a broken image is exactly what some reject grids show: render a placeholder
        return None
    return base64.b64encode(buffer.getvalue()).decode("ascii")
