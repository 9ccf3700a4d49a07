"""Any number of heads, any names: five heads (the three built-in ones, a zero-shot head and an MLP from a
safetensors file) write five score columns, each rejects with its own reason, and the manifest, funnel,
report and eval show each of them."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from curation.config import load_config
from curation.io.readers import read_shard
from curation.io.sources import list_shards
from curation.job import run_stages
from curation.lab.eval import evaluate, output_heads, read_output
from curation.models.heads import MlpHead
from curation.models.info import model_info
from curation.plan import StagePlan

BUILTIN = [
    "{name: unsafe, weights: builtin, threshold: 0.5}",
    "{name: watermark, weights: builtin, threshold: 0.5}",
    "{name: aesthetic, weights: builtin, threshold: 0.25, reject: below}",
]
NEW_COLUMNS = ("striped", "mlp_score")


def _heads(mlp_path, striped: float | None, mlp: float | None) -> str:
    def threshold(value):
        return "null" if value is None else f"{value:.6f}"

    zero_shot = (
        "{name: striped, prompts: ['striped shapes', 'a stripes pattern'], negative_prompts: ['plain shapes'], "
        f"threshold: {threshold(striped)}, reason: striped_pattern}}"
    )
    trained = f"{{name: mlp_score, weights: '{mlp_path}', threshold: {threshold(mlp)}, reason: mlp_rejected}}"
    return "heads=[" + ", ".join([*BUILTIN, zero_shot, trained]) + "]"


def _mlp_head(path) -> None:
    """An MLP with two hidden layers over the tiny CLIP's 128-d embedding (random weights, seeded)."""
    torch.manual_seed(0)
    head = MlpHead(128, (32, 8), ("embedding",), activation="relu")
    head.save(path)


def _thresholds(world, cfg) -> tuple[float, float]:
    """Thresholds that the new heads cross on some rows the built-in heads keep: the 80th percentile of
    their distinct scores on one shard (a zero-shot softmax saturates: many rows score 1.0), scored by the
    plan's stages directly."""
    plan = StagePlan.build(cfg, model_info(cfg.model))
    table = run_stages([*plan.cpu, plan.embed, plan.post[0]], read_shard(list_shards(str(world), "auto")[0]))
    kept = table.filter(pc.equal(table.column("status"), "kept")).to_pydict()
    striped = _top_fifth(kept["striped"])
    return striped, _top_fifth([m for s, m in zip(kept["striped"], kept["mlp_score"]) if s <= striped])


def _top_fifth(scores: list[float]) -> float:
    values = np.unique(np.asarray(scores, np.float32))
    return float(values[int(0.8 * (len(values) - 1))])


@pytest.mark.ray
def test_five_heads_five_columns_five_reasons(small_world, tmp_path, ray_local):
    from curation.runner import run_job

    world, truth = small_world
    mlp_path = tmp_path / "mlp_score.safetensors"
    _mlp_head(mlp_path)
    scoring = load_config("pipelines/demo.yaml", [_heads(mlp_path, None, None)])
    striped, mlp = _thresholds(world, scoring)
    cfg = load_config("pipelines/demo.yaml", [_heads(mlp_path, striped, mlp)])
    out = tmp_path / "out"
    manifest = run_job(cfg, str(world), str(out), log=lambda line: None).manifest

    schema = pq.read_schema(next((out / "kept").glob("*.parquet")))
    heads = ["unsafe", "watermark", "aesthetic", *NEW_COLUMNS]
    assert [name for name in schema.names if name in heads] == heads
    assert all(str(schema.field(name).type) == "float" for name in heads)
    reasons = ["unsafe", "watermark", "low_aesthetic", "striped_pattern", "mlp_rejected"]
    assert manifest["reject_reasons"]["heads"] == reasons
    assert [h["reason"] for h in manifest["heads"]] == reasons
    rejected = manifest["funnel"]["rejected_by_reason"]
    assert [r for r in reasons if not rejected.get(r)] == [], json.dumps(rejected)

    page = (out / "report.html").read_text()
    for column, reason in zip(heads, reasons):
        assert f'data-reason="{reason}"' in page  # the funnel
        assert f'data-column="{column}"' in page or f"{column}: " in page  # its histogram (and threshold)
    result = evaluate(read_output(str(out)), truth, heads=output_heads(str(out)))
    assert set(result["heads"]) == {"striped_pattern", "mlp_rejected"}
    assert all(m["rejected"] == rejected[reason] for reason, m in result["heads"].items())
    assert json.loads((out / "_manifest.json").read_text())["domain"]["outside_rows"] == 0  # synthetic: inside
