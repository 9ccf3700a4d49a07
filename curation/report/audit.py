"""Bias/diversity audit: do the filters remove one kind of content disproportionately?

Sampled rows that have embeddings are grouped twice: by image content (k-means on img_emb) and by
caption topic (k-means on txt_emb, each topic named by its most distinctive caption words). For each
group: rows kept and rejected, and the rejection rate per reason. A group is flagged when its
rejection rate is far above the overall rate, both in ratio and beyond what chance in a group of
that size explains (a binomial z-score), so that small groups do not raise false alarms.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

MIN_GROUP = 15  # groups smaller than this are listed but never flagged
FLAG_RATIO = 1.5  # flagged: rejection rate >= FLAG_RATIO x the overall rate ...
FLAG_Z = 3.0  # ... and >= FLAG_Z standard errors above it
STOPWORDS = set(
    "a an the of on in at to and or with for from by is are was be this that it its as into over under near "
    "photo picture image some two three one very".split()
)


@dataclass
class Group:
    kind: str  # "cluster" or "topic"
    index: int
    label: str
    rows: int
    kept: int
    rejected: int
    by_reason: dict[str, int]
    flag: str | None  # why the group stands out, in a sentence; None when it does not

    @property
    def rate(self) -> float:
        return self.rejected / self.rows if self.rows else 0.0


@dataclass
class Audit:
    rows: int  # sampled rows with embeddings
    without_embedding: int  # sampled rows rejected before the embedding stage: not grouped
    overall_rate: float
    overall_by_reason: dict[str, float]
    clusters: list[Group]
    topics: list[Group]
    cluster_labels: np.ndarray  # per audited row; the report's cluster-size fallback uses it


def audit(sample: pa.Table, *, groups: int | None = None, seed: int = 0) -> Audit | None:
    if "img_emb" not in sample.column_names or "txt_emb" not in sample.column_names:
        return None
    has_emb = np.asarray(sample.column("img_emb").is_valid()) & np.asarray(sample.column("txt_emb").is_valid())
    rows = sample.filter(pa.array(has_emb))
    if rows.num_rows < 2:
        return None
    k = groups or int(np.clip(rows.num_rows // 60, 2, 12))
    rejected = np.array([s == "rejected" for s in rows.column("status").to_pylist()])
    reasons = np.array([r or "" for r in rows.column("reject_reason").to_pylist()], dtype=object)
    overall = float(rejected.mean())
    overall_by_reason = {r: float(np.mean(reasons == r)) for r in sorted(set(reasons[rejected]))}

    img_labels = _kmeans(_matrix(rows.column("img_emb")), k, seed)
    txt_labels = _kmeans(_matrix(rows.column("txt_emb")), k, seed)
    captions = [c or "" for c in rows.column("caption").to_pylist()]
    topic_names = _topic_labels(captions, txt_labels)
    clusters = _groups(
        "cluster", img_labels, rejected, reasons, overall, overall_by_reason, _image_labels(captions, img_labels)
    )
    topics = _groups("topic", txt_labels, rejected, reasons, overall, overall_by_reason, topic_names)
    return Audit(
        rows=rows.num_rows,
        without_embedding=int((~has_emb).sum()),
        overall_rate=overall,
        overall_by_reason=overall_by_reason,
        clusters=clusters,
        topics=topics,
        cluster_labels=img_labels,
    )


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    flat = column.combine_chunks()
    return flat.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(flat), -1)


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from curation.dedup.semantic import assign_clusters, fit_centroids

    centroids = fit_centroids(x, k=k, seed=seed)
    return assign_clusters(x, centroids)


def _words(caption: str) -> list[str]:
    return [w for w in re.findall(r"[a-zà-ÿ]{3,}", caption.lower()) if w not in STOPWORDS]


def _topic_labels(captions: list[str], labels: np.ndarray, top: int = 3) -> dict[int, str]:
    """Each topic's most distinctive words: frequent in the topic, rarer elsewhere (smoothed ratio)."""
    overall: Counter = Counter()
    per: dict[int, Counter] = {}
    for caption, label in zip(captions, labels):
        words = set(_words(caption))
        overall.update(words)
        per.setdefault(int(label), Counter()).update(words)
    total = len(captions)
    names = {}
    for label, counts in per.items():
        size = int((labels == label).sum())
        score = {
            w: (c / size) * np.log((c + 1) / ((overall[w] + 1) * size / total)) for w, c in counts.items() if c >= 2
        }
        best = sorted(score, key=lambda w: (-score[w], w))[:top]
        names[label] = ", ".join(best) if best else "(no common words)"
    return names


def _image_labels(captions: list[str], labels: np.ndarray) -> dict[int, str]:
    """Image clusters are named by their captions' distinctive words too: a hint of what they show."""
    return _topic_labels(captions, labels)


def _groups(kind, labels, rejected, reasons, overall, overall_by_reason, names) -> list[Group]:
    found = []
    for label in sorted(set(labels.tolist())):
        mask = labels == label
        n = int(mask.sum())
        n_rej = int(rejected[mask].sum())
        by_reason = dict(Counter(reasons[mask & rejected]).most_common())
        group = Group(kind, int(label), names.get(int(label), ""), n, n - n_rej, n_rej, by_reason, None)
        group.flag = _flag(group, overall, overall_by_reason)
        found.append(group)
    return sorted(found, key=lambda g: (-g.rate, g.index))


def _flag(group: Group, overall: float, overall_by_reason: dict[str, float]) -> str | None:
    if group.rows < MIN_GROUP:
        return None
    rate = group.rate
    se = np.sqrt(max(overall * (1 - overall), 1e-9) / group.rows)
    if rate < FLAG_RATIO * overall or (rate - overall) / se < FLAG_Z:
        return None
    reason, count = max(
        group.by_reason.items(), key=lambda kv: kv[1] / group.rows / max(overall_by_reason.get(kv[0], 0), 1e-9)
    )
    return (
        f"{group.kind.capitalize()} {group.index} ({group.label}) loses {rate:.0%} of its {group.rows} sampled rows "
        f"against {overall:.0%} overall, most over-represented reason {reason} "
        f"({count / group.rows:.0%} here vs {overall_by_reason.get(reason, 0):.0%} overall): check that the "
        f"filter is not removing this kind of content for the wrong reason."
    )
