"""Renders the report: one static, self-contained HTML file (figures and thumbnails embedded as data:
URIs, no scripts, no network), for a person deciding whether the thresholds are right."""

from __future__ import annotations

import datetime
import json
from collections import Counter
from html import escape

import numpy as np
import pyarrow as pa

from curation.io.commit import Location
from curation.io.urls import strip_credentials, strip_credentials_in
from curation.report import plots
from curation.report.audit import Audit, Group, audit
from curation.report.data import ReportData, load, near_threshold, read_images, stage_order

REPORT_NAME = "report.html"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px;font-size:22px} header p{margin:2px 0;color:#cfd8dc;font-size:13px}
nav{background:#37474f;padding:6px 32px} nav a{color:#eceff1;margin-right:18px;font-size:13px;text-decoration:none}
main{padding:8px 32px 40px;max-width:1400px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:12px 20px;margin:16px 0}
h2{font-size:18px;margin:6px 0 10px} h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums} tr.stage td{background:#eceff1;font-weight:600}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin:8px 0}
.card{background:#eceff1;border-radius:6px;padding:8px 16px} .card b{display:block;font-size:22px}
.plots{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0} figcaption{font-size:12px;color:#555}
.grid{display:flex;flex-wrap:wrap;gap:8px} .tile{width:120px;font-size:11px;line-height:1.25}
.tile img,.tile .none{width:112px;height:112px;object-fit:contain;background:#f0f0f0;display:block;border:1px solid #ddd}
.tile .none{display:flex;align-items:center;justify-content:center;color:#999}
.tile .cap{max-height:4.2em;overflow:hidden;word-wrap:break-word} .tile .score{color:#555}
.flag{background:#fff3e0;border-left:4px solid #ef6c00;padding:6px 10px;margin:6px 0;font-size:13px}
.ok{color:#2e7d32} .muted{color:#666;font-size:13px}
.banner{background:#fff3cd;border:1px solid #e0b400;border-radius:6px;padding:12px 20px;margin:16px 0}
pre{background:#f5f5f5;padding:10px;font-size:12px;overflow:auto;max-height:420px}
"""


def write_report(output_url: str, out_file: str | None = None, *, max_rows: int = 4000, per_grid: int = 12) -> str:
    """Build the report of a finished output and write it (default: <output>/report.html); returns where."""
    data = load(output_url, max_rows=max_rows, per_grid=per_grid)
    page = render(data).encode()
    if out_file is None:
        Location.of(output_url).write_bytes(page, REPORT_NAME)
        return f"{output_url.rstrip('/')}/{REPORT_NAME}"
    with open(out_file, "wb") as f:
        f.write(page)
    return out_file


def render(data: ReportData) -> str:
    result = audit(data.sample)
    tiles = TileGrids(data)
    sections = [
        ("funnel", "Funnel", _funnel(data)),
        ("scores", "Score distributions", _scores(data)),
        ("near", "Near the thresholds", _near(data, tiles)),
        ("samples", "Samples", _samples(data, tiles)),
        ("captions", "Captions and privacy", _captions(data)),
        ("audit", "Bias / diversity audit", _audit(result)),
        ("clusters", "Cluster sizes", _clusters(data, result)),
        ("run", "Run", _run(data)),
    ]
    m = data.manifest
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(f'<section id="{sid}"><h2>{escape(title)}</h2>{html}</section>' for sid, title, html in sections)
    nav = "".join(f'<a href="#{sid}">{escape(title)}</a>' for sid, title, _ in sections)
    return tiles.fill(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Curation report: {escape(strip_credentials(data.output_url))}</title><style>{CSS}</style></head><body>"
        f"<header><h1>Curation report</h1><p>{escape(strip_credentials(data.output_url))}</p>"
        f"<p>model {escape(str(m.get('model_id', '?')))} &middot; curation {escape(str(m.get('versions', {}).get('curation', '?')))}"
        f" &middot; report generated {generated} &middot; plots from a sample of {data.sample.num_rows:,} rows</p></header>"
        f"{_domain_banner(m)}<nav>{nav}</nav><main>{body}</main></body></html>"
    )


def _domain_banner(manifest: dict) -> str:
    """A banner over everything when the built-in model saw images unlike its training world (domain.py)."""
    domain = manifest.get("domain") or {}
    if not domain.get("outside_rows"):
        return ""
    return (
        '<div id="domain-banner" class="banner"><b>These images are outside what the built-in model knows.</b> '
        f"{domain['outside_rows']:,} of {domain['scored_rows']:,} scored rows are unlike the synthetic world of "
        "drawn shapes its tiny CLIP and heads were trained on: the built-in heads abstained on them (scores "
        "written, no rejection), and their clip_score means little. For real photos use pipelines/basic.yaml, "
        "or real open_clip weights and heads (docs/models.md).</div>"
    )


def _pct(part: int | float, whole: int | float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _img(png: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img class="plot" alt="{escape(alt)}" src="data:image/png;base64,{png}">{cap}</figure>'


# ---- sections -------------------------------------------------------------------------------------


def funnel_rows(data: ReportData) -> list[tuple[str, list[tuple[str, int]]]]:
    """The manifest's rejections grouped by stage, in pipeline order: [(stage, [(reason, rows)])]."""
    stages: dict[str, list[tuple[str, int]]] = {}
    for reason, count in data.manifest["funnel"]["rejected_by_reason"].items():
        stages.setdefault(data.reason_stage.get(reason, "other"), []).append((str(reason), int(count)))
    return sorted(stages.items(), key=lambda kv: stage_order(kv[0]))


def _funnel(data: ReportData) -> str:
    f = data.manifest["funnel"]
    total = f["input"]
    cards = "".join(
        f'<div class="card">{label}<b>{value:,}</b>{_pct(value, total) if label != "input" else ""}</div>'
        for label, value in (("input", total), ("kept", f["kept"]), ("rejected", f["rejected"]))
    )
    stages = funnel_rows(data)
    rows = []
    for stage, reasons in stages:
        subtotal = sum(c for _, c in reasons)
        rows.append(
            f'<tr class="stage"><td>{escape(stage)}</td><td></td><td class="n">{subtotal:,}</td><td class="n">{_pct(subtotal, total)}</td></tr>'
        )
        for reason, count in reasons:
            rows.append(
                f'<tr data-reason="{escape(reason)}"><td></td><td>{escape(reason)}</td>'
                f'<td class="n">{count:,}</td><td class="n">{_pct(count, total)}</td></tr>'
            )
    table = (
        '<table id="funnel-table"><tr><th>stage</th><th>reject reason</th><th>rows</th><th>of input</th></tr>'
        + "".join(rows)
        + f'<tr class="stage"><td>kept</td><td></td><td class="n">{f["kept"]:,}</td><td class="n">{_pct(f["kept"], total)}</td></tr></table>'
    )
    chart = _img(
        plots.funnel([(s, sum(c for _, c in r)) for s, r in stages], total), "funnel: rows remaining after each stage"
    )
    return f'<div class="cards">{cards}</div><div class="plots"><div>{table}</div>{chart}</div>'


def _scores(data: ReportData) -> str:
    if not data.score_columns or not data.sample.num_rows:
        return '<p class="muted">No score columns in this output.</p>'
    figures = []
    for column in data.score_columns:
        cuts = [t for t in data.thresholds if t.column == column]
        note = "; ".join(f"rejects {t.reject} {t.value:.3g} ({t.label})" for t in cuts) or "no threshold"
        figures.append(_img(plots.histogram(data.sample, column, cuts), f"histogram of {column}", f"{column}: {note}"))
    listed = "".join(
        f'<tr class="threshold" data-column="{escape(t.column)}"><td>{escape(t.column)}</td><td>{escape(t.reject)}</td>'
        f'<td class="n">{t.value:.4g}</td><td>{escape(t.label)}</td></tr>'
        for t in data.thresholds
    )
    table = f'<table id="thresholds"><tr><th>column</th><th>rejects</th><th>threshold</th><th>from</th></tr>{listed}</table>'
    return f'<p class="muted">Kept (green) and rejected (red) rows of the sample; dashed lines are the thresholds.</p>{table}<div class="plots">{"".join(figures)}</div>'


class TileGrids:
    """The page's image grids, filled in last: the images of every grid are read in one pass over the
    output files, so a row group that several grids show rows of is read once (a row group of web
    images is a few hundred MB; a grid shows a dozen of them)."""

    def __init__(self, data: ReportData) -> None:
        self.data = data
        self.grids: list[tuple[pa.Table, str | None]] = []

    def grid(self, rows: pa.Table, score_column: str | None = None) -> str:
        """A placeholder for the grid of `rows`, replaced by `fill`."""
        if rows.num_rows == 0:
            return '<p class="muted">none in the sample</p>'
        self.grids.append((rows, score_column))
        return self._placeholder(len(self.grids) - 1)

    def fill(self, page: str) -> str:
        if not self.grids:
            return page
        wanted = pa.concat_tables([rows.select(["file", "row"]) for rows, _ in self.grids], promote_options="default")
        images = read_images(self.data.output_url, self.data.files, wanted)
        start = 0
        for i, (rows, score_column) in enumerate(self.grids):
            page = page.replace(
                self._placeholder(i), _tiles(rows, images[start : start + rows.num_rows], score_column), 1
            )
            start += rows.num_rows
        return page

    @staticmethod
    def _placeholder(i: int) -> str:
        return f"\x00grid {i}\x00"  # NUL never occurs in the page otherwise (all text is escaped or cleaned)


def _tiles(rows: pa.Table, images: list[bytes | None], score_column: str | None = None) -> str:
    captions = rows.column("caption").to_pylist()
    keys = rows.column("key").to_pylist()
    scores = (
        rows.column(score_column).to_pylist()
        if score_column and score_column in rows.column_names
        else [None] * rows.num_rows
    )
    statuses = rows.column("status").to_pylist() if "status" in rows.column_names else [None] * rows.num_rows
    tiles = []
    for key, caption, image, score, status in zip(keys, captions, images, scores, statuses):
        thumb = plots.thumbnail(image)
        # rejected/ holds no image bytes by default (output.rejected_images): they stay in the input
        missing = "not stored" if image is None and status == "rejected" else "no image"
        picture = (
            f'<img alt="{escape(str(key))}" src="data:image/jpeg;base64,{thumb}">'
            if thumb
            else f'<div class="none">{missing}</div>'
        )
        shown = f'<div class="score">{escape(score_column)} {score:.3f}</div>' if score is not None else ""
        tiles.append(
            f'<div class="tile" title="{escape(str(key))}">{picture}{shown}<div class="cap">{escape(caption or "")}</div></div>'
        )
    return f'<div class="grid">{"".join(tiles)}</div>'


def _samples(data: ReportData, tiles: TileGrids) -> str:
    parts = []
    for name, rows in data.grid_rows.items():
        count = (
            data.manifest["funnel"]["kept"]
            if name == "kept"
            else data.manifest["funnel"]["rejected_by_reason"].get(name, 0)
        )
        heading = "kept" if name == "kept" else f"rejected: {name}"
        parts.append(
            f'<div class="sample-grid" data-reason="{escape(name)}"><h3>{escape(heading)} <span class="muted">({count:,} rows)</span></h3>{tiles.grid(rows)}</div>'
        )
    return "".join(parts)


def _near(data: ReportData, tiles: TileGrids) -> str:
    if not data.thresholds:
        return '<p class="muted">The run applied no score thresholds.</p>'
    parts = []
    for t in data.thresholds:
        kept_side, cut_side = near_threshold(data.sample, t)
        parts.append(
            f"<h3>{escape(t.column)} at {t.value:.4g} <span class=muted>({escape(t.label)})</span></h3>"
            f'<p class="muted">just on the kept side</p>{tiles.grid(kept_side, t.column)}'
            f'<p class="muted">just on the rejected side</p>{tiles.grid(cut_side, t.column)}'
        )
    return '<p class="muted">Sampled rows closest to each threshold: are these the right calls?</p>' + "".join(parts)


def _group_table(groups: list[Group], overall_by_reason: dict[str, float]) -> str:
    reasons = list(overall_by_reason)
    head = "".join(f"<th>{escape(r)}</th>" for r in reasons)
    rows = []
    for g in groups:
        cells = "".join(f'<td class="n">{_pct(g.by_reason.get(r, 0), g.rows)}</td>' for r in reasons)
        mark = ' style="background:#fff3e0"' if g.flag else ""
        rows.append(
            f'<tr{mark}><td>{g.index}</td><td>{escape(g.label)}</td><td class="n">{g.rows}</td><td class="n">{g.kept}</td>'
            f'<td class="n">{g.rejected}</td><td class="n">{_pct(g.rejected, g.rows)}</td>{cells}</tr>'
        )
    overall = "".join(f'<td class="n">{100 * overall_by_reason[r]:.1f}%</td>' for r in reasons)
    return (
        f"<table><tr><th>#</th><th>distinctive caption words</th><th>rows</th><th>kept</th><th>rejected</th><th>rate</th>{head}</tr>"
        + "".join(rows)
        + f'<tr class="stage"><td></td><td>all audited rows</td><td></td><td></td><td></td><td></td>{overall}</tr></table>'
    )


def _captions(data: ReportData) -> str:
    """Caption languages (kept vs rejected), personal data redacted from captions and faces found, in the
    sample: what the caption, language and privacy stages did beyond the funnel's rejections."""
    sample = data.sample
    n = sample.num_rows
    if not n:
        return '<p class="muted">No rows sampled.</p>'
    parts = [f'<p class="muted">In the sample of {n:,} rows.</p>']
    if "lang" in sample.column_names and sample.column("lang").null_count < n:
        kept = Counter(
            lang
            for lang, s in zip(sample.column("lang").to_pylist(), sample.column("status").to_pylist())
            if s == "kept"
        )
        rejected = Counter(
            lang
            for lang, s in zip(sample.column("lang").to_pylist(), sample.column("status").to_pylist())
            if s != "kept"
        )
        languages = sorted(set(kept) | set(rejected), key=lambda lang: (-(kept[lang] + rejected[lang]), str(lang)))[:15]
        rows = "".join(
            f'<tr><td>{escape(str(lang) if lang is not None else "not identified")}</td><td class="n">{kept[lang]:,}</td><td class="n">{rejected[lang]:,}</td></tr>'
            for lang in languages
        )
        parts.append(
            f'<h3>Caption languages</h3><table id="languages"><tr><th>lang</th><th>kept</th><th>rejected</th></tr>{rows}</table>'
        )
    if "pii" in sample.column_names and sample.column("pii").null_count < n:
        found = [kinds for kinds in sample.column("pii").to_pylist() if kinds is not None]
        kinds = Counter(kind for row in found for kind in row)
        rows = "".join(f'<tr><td>{escape(k)}</td><td class="n">{c:,}</td></tr>' for k, c in kinds.most_common())
        with_pii = sum(1 for row in found if row)
        parts.append(
            f"<h3>Personal data in captions</h3><p>{with_pii:,} of {len(found):,} examined captions ({_pct(with_pii, len(found))}) "
            f'held personal data.</p><table id="pii"><tr><th>kind</th><th>captions</th></tr>{rows}</table>'
        )
    else:
        parts.append('<p class="muted">Personal data in captions: not looked for (caption.pii: off).</p>')
    if "faces" in sample.column_names and sample.column("faces").null_count < n:
        counts = [c for c in sample.column("faces").to_pylist() if c is not None]
        with_faces = sum(1 for c in counts if c)
        parts.append(
            f'<h3>Faces</h3><p id="faces">{with_faces:,} of {len(counts):,} examined images ({_pct(with_faces, len(counts))}) '
            f"showed faces ({sum(counts):,} faces).</p>"
        )
    else:
        parts.append('<p class="muted">Faces: not looked for (privacy.faces: off).</p>')
    return "".join(parts)


def _audit(result: Audit | None) -> str:
    if result is None:
        return '<p class="muted">No embeddings in this output: nothing to group by.</p>'
    parts = [
        f'<p class="muted">{result.rows:,} sampled rows with embeddings, grouped by image content (k-means on img_emb) and by '
        f"caption topic (k-means on txt_emb). Overall rejection rate among them: {result.overall_rate:.1%}. "
        f"{result.without_embedding:,} sampled rows were rejected before embedding and are not grouped. A group is flagged "
        f"when its rejection rate is at least 1.5&times; the overall rate and at least 3 standard errors above it.</p>"
    ]
    flags = [g.flag for g in result.clusters + result.topics if g.flag]
    parts.append(
        "".join(f'<div class="flag">{escape(f)}</div>' for f in flags)
        or '<p class="ok">No group is rejected far more often than the rest.</p>'
    )
    for title, groups in (("Image clusters", result.clusters), ("Caption topics", result.topics)):
        names = [f"{g.index}: {g.label[:40]}" for g in groups]
        chart = plots.group_rates(
            names, [g.kept for g in groups], [g.rejected for g in groups], result.overall_rate, title
        )
        parts.append(
            f'<h3>{title}</h3><div class="plots"><div>{_group_table(groups, result.overall_by_reason)}</div>{_img(chart, title)}</div>'
        )
    return "".join(parts)


def _clusters(data: ReportData, result: Audit | None) -> str:
    if data.cluster_sizes is not None:
        sizes, source = data.cluster_sizes, "kept rows per dedup cluster, _state/"
    elif result is not None:
        sizes, source = np.bincount(result.cluster_labels), "sampled rows per audit cluster"
    else:
        return '<p class="muted">No clusters: the run kept no dedup state and the output has no embeddings.</p>'
    summary = (
        f"{len(sizes)} clusters; rows per cluster min {sizes.min()}, median {int(np.median(sizes))}, max {sizes.max()}"
    )
    return f'<p class="muted">{escape(summary)}</p>' + _img(
        plots.cluster_sizes(sizes, source), "cluster-size distribution"
    )


def _run(data: ReportData) -> str:
    m = data.manifest
    timings = dict(m.get("timings", {}))
    stages = timings.pop("stages", None) or {}
    rows = "".join(
        f'<tr><td>{escape(str(k))}</td><td class="n">{v:,.2f} s</td></tr>'
        for k, v in timings.items()
        if isinstance(v, (int, float))
    )
    stage_rows = "".join(
        f'<tr><td>{escape(str(k))}</td><td class="n">{v:,.2f} s</td></tr>'
        for k, v in sorted(stages.items(), key=lambda kv: -kv[1])
        if isinstance(v, (int, float))
    )
    stage_table = f"<h3>Time per stage (summed over shards)</h3><table>{stage_rows}</table>" if stage_rows else ""
    resume = m.get("resume", {})
    facts = (
        f"<table><tr><td>shards</td><td class=n>{len(m.get('inputs', []))}</td></tr>"
        f"<tr><td>attempt</td><td class=n>{resume.get('attempt', 1)}</td></tr>"
        f"<tr><td>config digest</td><td>{escape(str(m.get('config_digest', ''))[:16])}</td></tr></table>"
    )
    config = escape(json.dumps(strip_credentials_in(m.get("config", {})), indent=2, sort_keys=True))
    versions = escape(json.dumps(m.get("versions", {}), sort_keys=True))
    return (
        f'<div class="plots"><div><h3>Timings</h3><table id="timings">{rows}</table>{stage_table}</div><div><h3>Job</h3>{facts}</div></div>'
        f'<p class="muted">versions: {versions}</p><details><summary>config</summary><pre>{config}</pre></details>'
    )
