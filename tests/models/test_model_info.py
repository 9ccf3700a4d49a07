"""The driver learns a model's facts from its JSON config without importing torch or open_clip."""

from __future__ import annotations

import subprocess
import sys

import pytest

from curation.config import ModelConfig
from curation.errors import UserError
from curation.models.info import architecture_config, model_info


@pytest.mark.parametrize("arch", ["curation-tiny", "ViT-B-32", "ViT-L-14", "ViT-B-16-SigLIP"])
def test_config_files_say_what_open_clip_says(arch):
    import open_clip

    import curation.models.clip  # noqa: F401 - registers configs/ with open_clip

    assert architecture_config(arch) == open_clip.get_model_config(arch)


def test_model_info_of_builtin_and_of_a_tag():
    tiny = model_info(ModelConfig())
    assert (tiny.image_size, tiny.embed_dim) == (64, 128) and tiny.model_id.startswith("curation-tiny:builtin@")
    vit = model_info(ModelConfig(arch="ViT-L-14", pretrained="openai"))
    assert (vit.image_size, vit.embed_dim, vit.model_id) == (224, 768, "ViT-L-14:openai")


def test_unknown_architecture_is_one_line():
    with pytest.raises(UserError, match="unknown model.arch 'ViT-Nope'"):
        model_info(ModelConfig(arch="ViT-Nope"))


def test_planning_a_job_imports_no_torch():
    code = (
        "import sys\n"
        "from curation.config import load_config\n"
        "from curation.models.info import model_info\n"
        "from curation.plan import StagePlan\n"
        "from curation.phases.score import place_stages\n"
        "cfg = load_config('pipelines/demo.yaml')\n"
        "place_stages(StagePlan.build(cfg, model_info(cfg.model)), cfg)\n"
        "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules, 'the driver imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
