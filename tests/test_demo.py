"""`curate demo` reuses its world only when this version of the generator would write the same one."""

from __future__ import annotations

import json

from curation.lab.demo import _same_world
from curation.lab.synth import generate
from curation.lab.synth.defects import DEFAULT_PLANTERS


def test_a_world_from_other_planters_is_made_again(tmp_path):
    truth = generate(str(tmp_path / "now"), rows=40, seed=0, fmt="webdataset", shard_size=20)
    assert truth["defect_kinds"] == [p.kind for p in DEFAULT_PLANTERS]
    assert _same_world(tmp_path / "now" / "truth.json", rows=40, seed=0)
    assert not _same_world(tmp_path / "now" / "truth.json", rows=41, seed=0)
    assert not _same_world(tmp_path / "now" / "truth.json", rows=40, seed=1)
    generate(str(tmp_path / "old"), rows=40, seed=0, fmt="webdataset", shard_size=20, planters=DEFAULT_PLANTERS[:-2])
    assert not _same_world(tmp_path / "old" / "truth.json", rows=40, seed=0)  # before the caption planters
    older = json.loads((tmp_path / "now" / "truth.json").read_text())
    del older["defect_kinds"]  # written before truth files named their planters
    (tmp_path / "now" / "truth.json").write_text(json.dumps(older))
    assert not _same_world(tmp_path / "now" / "truth.json", rows=40, seed=0)
    assert not _same_world(tmp_path / "missing.json", rows=40, seed=0)


def test_the_demo_reads_the_shipped_demo_pipeline():
    from curation.lab.demo import DEMO_CONFIG

    assert DEMO_CONFIG.is_file() and DEMO_CONFIG.name == "demo.yaml"
