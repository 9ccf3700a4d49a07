"""The built-in model's domain: synthetic rows inside, photo captions outside; heads trained on the world
abstain outside it, the user's own heads do not; the job says it once; the report shows a banner."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.config import HeadConfig
from curation.domain import OUTSIDE_COLUMN, DomainTally, builtin_domain
from curation.io.readers import read_shard
from curation.io.sources import list_shards
from curation.report.html import _domain_banner
from curation.stages.caption import CaptionStage
from curation.stages.heads import HeadsFilter


def test_the_worlds_captions_are_inside_and_photo_captions_outside(small_world):
    domain = builtin_domain("curation-tiny")
    assert domain is not None and domain.centroids.shape == (16, 128)
    captions = []
    for shard in list_shards(str(small_world[0]), "auto"):
        captions += CaptionStage().process_batch(read_shard(shard)).column("caption").to_pylist()
    assert domain.coverage(captions).min() >= domain.min_coverage
    photos = ["The astronaut Eileen Collins in her flight suit", "Greek coins from Pompeii on a dark cloth"]
    embeddings = domain.centroids[:2]  # images right on the world's centroids: only the captions are foreign
    assert domain.outside_rows(embeddings, photos).tolist() == [True, True]
    assert domain.outside_rows(embeddings, captions[:2]).tolist() == [False, False]
    away = np.linalg.pinv(domain.centroids) @ -np.ones(len(domain.centroids))  # unlike every centroid alike
    assert domain.outside((away / np.linalg.norm(away))[None].astype(np.float32)).tolist() == [True]


def _scored(outside: list[bool]) -> pa.Table:
    n = len(outside)
    return pa.table(
        {
            "watermark": pa.array([0.9] * n, pa.float32()),
            "logo": pa.array([0.9] * n, pa.float32()),
            "status": ["kept"] * n,
            "reject_reason": pa.array([None] * n, pa.string()),
            "reject_stage": pa.array([None] * n, pa.string()),
            OUTSIDE_COLUMN: outside,
        }
    )


def test_builtin_heads_abstain_outside_the_domain_the_users_heads_do_not():
    builtin = HeadsFilter.from_config((HeadConfig(name="watermark", weights="builtin", threshold=0.5),))
    assert builtin.process_batch(_scored([True, False])).column("reject_reason").to_pylist() == [None, "watermark"]
    own = HeadsFilter.from_config((HeadConfig(name="logo", weights="/models/logo.safetensors", threshold=0.5),))
    assert own.process_batch(_scored([True, False])).column("reject_reason").to_pylist() == ["logo", "logo"]


def test_the_job_says_it_once_and_the_report_shows_a_banner():
    lines: list[str] = []
    tally = DomainTally(lines.append)
    for rows, outside in ((100, 0), (100, 7), (100, 100)):
        tally.observe(rows, outside)
    assert len(lines) == 1 and lines[0].startswith("warning: 7 of 200 images scored so far")
    assert tally.summary() == {"outside_rows": 107, "scored_rows": 300}
    assert 'id="domain-banner"' in _domain_banner({"domain": tally.summary()})
    assert _domain_banner({"domain": {"outside_rows": 0, "scored_rows": 300}}) == ""
    assert _domain_banner({}) == ""  # runs with another model, or from before the guard


def test_the_domain_is_small_and_its_vectors_unit_length():
    domain = builtin_domain("curation-tiny")
    assert np.allclose(np.linalg.norm(domain.centroids, axis=1), 1.0, atol=1e-5)
    assert 0 < domain.max_distance and 0 < domain.min_coverage <= 1 and len(domain.vocabulary) < 2000
