"""What the driver needs to know about a model without building it (and without importing torch or
open_clip, which take seconds to import): its architecture's image size and embedding width, read from
the architecture's JSON config, and a stable model id. Workers build the model (curation/models/clip.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from curation.config import ModelConfig
from curation.errors import UserError
from curation.models.files import ASSETS_DIR, BUILTIN, CONFIG_DIR, WEIGHTS_FILE  # noqa: F401 - re-exported


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of the pipeline needs to know about a model without building it."""

    model_id: str
    image_size: int
    embed_dim: int


def builtin_dir(arch: str) -> Path:
    """The folder of the model the package ships for `arch` (open_clip_config.json + weights + heads/)."""
    return ASSETS_DIR / arch


def builtin_weights(arch: str) -> Path:
    """The shipped weights file of `arch`, or one line naming what the package does ship."""
    weights = builtin_dir(arch) / WEIGHTS_FILE
    if not weights.is_file():
        shipped = sorted(p.parent.name for p in ASSETS_DIR.glob(f"*/{WEIGHTS_FILE}")) if ASSETS_DIR.is_dir() else []
        raise UserError(
            f"model.pretrained builtin: the package ships no weights for {arch} (it ships: "
            f"{', '.join(shipped) or 'none'}): give an open_clip tag, a local .safetensors path, or null"
        )
    return weights


def architecture_config(arch: str) -> dict:
    """The open_clip architecture config of `arch`: ours (configs/), else open_clip's bundled JSON
    (read as a file), else whatever open_clip itself knows (which imports it)."""
    for folder in (CONFIG_DIR, _open_clip_config_dir()):
        if folder is not None and "/" not in arch and (folder / f"{arch}.json").is_file():
            return json.loads((folder / f"{arch}.json").read_text())
    from curation.models.registry import open_clip_architecture

    return open_clip_architecture(arch)


def _open_clip_config_dir() -> Path | None:
    spec = importlib.util.find_spec("open_clip")  # locates the package without importing it
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model_configs"


def model_image_size(arch: str) -> int:
    size = architecture_config(arch)["vision_cfg"]["image_size"]
    return size if isinstance(size, int) else size[0]


def model_info(cfg: ModelConfig) -> ModelInfo:
    arch = architecture_config(cfg.arch)
    if not cfg.pretrained:
        source = f"random-init(seed={cfg.seed})"
    elif cfg.pretrained == BUILTIN:
        source = f"builtin@{_file_digest(builtin_weights(cfg.arch))}"
    elif Path(cfg.pretrained).is_file():  # a local weights file: its content, not only its name
        source = f"{cfg.pretrained}@{_file_digest(Path(cfg.pretrained))}"
    else:
        source = cfg.pretrained
    return ModelInfo(
        model_id=f"{cfg.arch}:{source}", image_size=model_image_size(cfg.arch), embed_dim=arch["embed_dim"]
    )


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()[:12]
