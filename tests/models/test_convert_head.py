"""`curate convert-head --from laion-aesthetic`: LAION's aesthetic predictor as a pipeline head, same scores."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from curation.errors import UserError
from curation.lab.convert_head import convert_head, read_state_dict
from curation.models.heads import ImageFeatures, load_head


class LaionAestheticMlp(nn.Module):
    """The improved-aesthetic-predictor's MLP, as its repository defines it (input: ViT-L/14 embedding)."""

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


def _embeddings(n: int, dim: int) -> torch.Tensor:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(1))
    return nn.functional.normalize(x, dim=-1)


def test_converted_laion_aesthetic_mlp_scores_as_the_original(tmp_path):
    torch.manual_seed(0)
    original = LaionAestheticMlp().eval()
    state = original.state_dict()
    assert sorted(state) == sorted(f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias"))
    torch.save(state, tmp_path / "sac+logos+ava1-l14-linearMSE.pth")

    out = tmp_path / "laion-aesthetic.safetensors"
    result = subprocess.run(
        [sys.executable, "-m", "curation.cli", "convert-head", "--from", "laion-aesthetic"]
        + [str(tmp_path / "sac+logos+ava1-l14-linearMSE.pth"), str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    head = load_head(out)
    assert head.hidden == (1024, 128, 64, 16) and head.output == "identity"
    x = _embeddings(64, 768)
    with torch.inference_mode():
        expected = original(x).squeeze(-1)
        got = head(ImageFeatures(embedding=x, tokens=None))
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_converted_laion_linear_predictor_scores_as_the_original(tmp_path):
    torch.manual_seed(0)
    original = nn.Linear(512, 1).eval()  # sa_0_4_vit_b_32_linear.pth: keys weight, bias
    torch.save(original.state_dict(), tmp_path / "linear.pth")
    convert_head("laion-aesthetic", tmp_path / "linear.pth", tmp_path / "linear.safetensors")
    head = load_head(tmp_path / "linear.safetensors")
    x = _embeddings(16, 512)
    with torch.inference_mode():
        assert torch.allclose(head(ImageFeatures(embedding=x, tokens=None)), original(x).squeeze(-1), atol=1e-5)


class _Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_pickle_with_code_is_refused_not_run(tmp_path):
    torch.save({"layers.0.weight": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="plain PyTorch state dict"):
        read_state_dict(tmp_path / "evil.pth")
    torch.save({"fc.weight": torch.zeros(1, 4)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not a LAION aesthetic predictor"):
        convert_head("laion-aesthetic", tmp_path / "other.pth", tmp_path / "out.safetensors")
