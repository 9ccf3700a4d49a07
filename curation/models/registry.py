"""open_clip with the project's own architectures (configs/*.json) registered, once: every module that
builds a model imports open_clip from here, so `curation-tiny` is created exactly like `ViT-B-32`."""

from __future__ import annotations

import open_clip

from curation.errors import UserError
from curation.models.files import CONFIG_DIR

open_clip.add_model_config(CONFIG_DIR)


def open_clip_architecture(arch: str) -> dict:
    """An architecture open_clip knows (its config), or one line naming some it does know."""
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        known = ", ".join(sorted(open_clip.list_models())[:8])
        raise UserError(f"unknown model.arch {arch!r}: use an open_clip architecture name (e.g. {known}, ...)")
    return cfg
