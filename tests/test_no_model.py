"""model: none (pipelines/basic.yaml): no embedding, no heads, no torch; what needs an embedding is refused
in one line; the embedding columns stay in the schema, null."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from curation.config import load_config
from curation.errors import UserError
from curation.models.info import model_info
from curation.plan import StagePlan
from curation.stages.decode import DecodeStage

ROOT = Path(__file__).resolve().parents[1]


def test_model_none_turns_off_what_needs_an_embedding():
    for overrides in (["model=none"], ["model.arch=none"]):
        cfg = load_config(None, overrides)
        assert not cfg.has_model and cfg.heads == ()
        assert not cfg.dedup.semantic and cfg.dedup.near_min_cosine == -1 and cfg.dedup.quality == "width"
    assert load_config("pipelines/basic.yaml").model.arch == "none"


@pytest.mark.parametrize(
    "override, named",
    [
        ("clip.min_score=0.3", "clip.min_score"),
        ("dedup.semantic=true", "dedup.semantic"),
        ("heads=[{name: unsafe, weights: builtin}]", "heads"),
        ("dedup.quality=clip_score", "dedup.quality clip_score"),
        ("image_filter.reference=[/data/imagenet]", "image_filter.reference"),
    ],
)
def test_what_needs_an_embedding_is_refused_in_one_line(override, named):
    with pytest.raises(UserError, match=f"model: none gives no embeddings or scores, which {named} need"):
        load_config("pipelines/basic.yaml", [override])


def test_the_plan_has_no_embedding_and_the_schema_keeps_null_embedding_columns():
    cfg = load_config("pipelines/basic.yaml")
    plan = StagePlan.build(cfg, model_info(cfg.model))
    assert plan.embed is None and [s.name.value for s in plan.post] == ["privacy"]
    assert {"img_emb", "txt_emb", "clip_score"} <= set(plan.schema.names)
    assert not {"unsafe", "watermark", "aesthetic"} & set(plan.schema.names)  # no heads, no head columns
    assert not {"heads", "clip", "embed"} & set(plan.reject_reasons())


def test_decode_without_a_model_hashes_and_makes_no_pixels():
    out = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(out, "JPEG")
    table = pa.table({"image": [out.getvalue()], "status": ["kept"], "reject_reason": pa.array([None], pa.string())})
    table = table.append_column("reject_stage", pa.array([None], pa.string()))
    done = DecodeStage(image_size=None).process_batch(table).to_pylist()[0]
    assert (done["width"], done["height"], done["pixels"]) == (300, 200, None) and done["phash"] is not None


def test_the_stages_a_worker_unpickles_import_no_torch(tmp_path):
    cfg = load_config("pipelines/basic.yaml")
    (tmp_path / "plan.pickle").write_bytes(pickle.dumps(StagePlan.build(cfg, model_info(cfg.model))))
    script = (
        "import pickle, sys; import curation.job; "
        f"plan = pickle.loads(open({str(tmp_path / 'plan.pickle')!r}, 'rb').read()); "
        "print(sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
