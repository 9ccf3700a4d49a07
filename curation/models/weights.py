"""Weights files checked on the driver, before Ray starts: a wrong file is one line that says what is wrong
with it, not an actor's traceback (or PyTorch's advice to load a pickle with weights_only=False, the opposite
of what to do with a file one does not trust).

A `.safetensors` file must have a valid safetensors header (checked without reading its tensors); any other
file must load with `torch.load(weights_only=True)` (memory-mapped, so a large file costs little) as a state
dict of tensors: that is how the models load them (models/clip.py, models/towers.py, models/heads.py).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from curation.config import Config
from curation.errors import UserError
from curation.models.files import BUILTIN, WEIGHTS_FILE

SAFETENSORS = ".safetensors"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def local_weights_path(pretrained: str, setting: str = "model.pretrained") -> Path | None:
    """The weights file `pretrained` names (a file, or a folder `curate train-clip` wrote), or None when it
    names no local file (builtin, an open_clip tag). A path that does not exist is one line."""
    if pretrained == BUILTIN:
        return None
    path = Path(pretrained).expanduser()
    if path.is_dir() and (path / WEIGHTS_FILE).is_file():
        return path / WEIGHTS_FILE
    looks_like_path = any(sep in pretrained for sep in ("/", "\\")) or path.suffix in (SAFETENSORS, *TORCH_SUFFIXES)
    if not looks_like_path:
        return None
    if not path.is_file():
        raise UserError(f"{setting} file {pretrained} not found: give an existing .safetensors path")
    return path


def check_model_files(cfg: Config) -> None:
    """Every local weights file the job's model and heads name is one the loaders accept."""
    if cfg.model.pretrained:
        path = local_weights_path(cfg.model.pretrained)
        if path is not None:
            check_weights_file(path, "model.pretrained")
    for head in cfg.heads:
        if head.weights and head.weights != BUILTIN:
            path = Path(head.weights).expanduser()
            if not path.is_file():
                raise UserError(
                    f"head weights {head.weights} not found: give an existing .safetensors file, or weights: builtin"
                )
            check_weights_file(path, f"heads[{head.name}].weights", torch_allowed=False)


def check_weights_file(path: Path, setting: str, *, torch_allowed: bool = True) -> None:
    problem = weights_problem(path, torch_allowed=torch_allowed)
    if problem is not None:
        raise UserError(f"{setting} {path} {problem}")


def weights_problem(path: Path, *, torch_allowed: bool = True) -> str | None:
    """What is wrong with a weights file, as the end of a sentence naming it, or None if it loads."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc}): give a readable weights file"
    if path.suffix == SAFETENSORS or not torch_allowed:
        return _safetensors_problem(path)
    if _safetensors_problem(path) is None:  # the loaders choose by the suffix
        return f"is a safetensors file without the {SAFETENSORS} suffix: rename it to end in {SAFETENSORS}"
    return _torch_problem(path)


def _safetensors_problem(path: Path) -> str | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            if not list(handle.keys()):
                return "holds no tensors: give the model's weights file"
    except SafetensorError as exc:
        why = str(exc).removeprefix("Error while deserializing header: ")
        return (
            f"is not a valid safetensors file ({why[:80]}: a text file, a truncated download or another format?): "
            "give the model's .safetensors weights"
        )
    except Exception as exc:  # noqa: BLE001 - any other refusal of the file is the same answer
        return f"is not a valid safetensors file ({type(exc).__name__}): give the model's .safetensors weights"
    return None


def _torch_problem(path: Path) -> str | None:
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if unsafe:
            return (
                f"is a pickle that runs code to load ({unsafe.group(1)}), which torch.load(weights_only=True) refuses "
                "as it must for a file it cannot trust: save its state dict with safetensors and give that file"
            )
        return "is not a weights file (not a PyTorch checkpoint): give the model's .safetensors (or .pt state dict)"
    except Exception as exc:  # noqa: BLE001 - torch reports damage as RuntimeError, EOFError, ValueError, ...
        return (
            f"is not a weights file PyTorch can read ({type(exc).__name__}): give the model's .safetensors "
            "(or .pt state dict)"
        )
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return "holds no state dict of tensors: give the model's .safetensors (or .pt state dict)"
    return None
