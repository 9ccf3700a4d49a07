"""The job's configuration: one typed object, loaded from YAML, overridable with `--set a.b=value`.

Defaults are the embedded demo: a config file may be empty.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from curation.errors import UserError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunConfig(_Section):
    address: str | None = Field(None, description="Ray cluster address; none starts a local Ray.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray (default: all).")
    work_dir: str | None = Field(None, description="Scored shards and decisions; default <output>/_work.")
    progress: bool | None = Field(None, description="Progress bars; default: only on a terminal.")


class InputConfig(_Section):
    format: Literal["auto", "webdataset", "parquet"] = "auto"


class DecodeConfig(_Section):
    max_pixels: int = Field(89_478_485, ge=1, description="Larger images are rejected as decompression bombs.")


class BasicConfig(_Section):
    """DataComp 'basic' rules."""

    min_caption_chars: int = Field(6, ge=0, description="Captions shorter than this are rejected.")
    min_caption_words: int = Field(3, ge=0, description="Captions with fewer words are rejected.")
    min_short_side: int = Field(32, ge=1, description="Images whose short side is smaller are rejected.")
    max_aspect: float = Field(3.0, ge=1.0, description="Images with long/short side above this are rejected.")


class ModelConfig(_Section):
    arch: str = Field("curation-tiny", description="open_clip architecture name.")
    pretrained: str | None = Field(
        None, description="open_clip tag, local .safetensors path, or none for random init."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    batch_size: int = Field(256, ge=1, description="Images per forward pass.")
    actors: int = Field(1, ge=1, description="Embedding actors in the pool.")
    num_gpus: float = Field(0.0, ge=0.0, description="GPUs per embedding actor; > 0 places it on a GPU.")
    num_cpus: float = Field(1.0, gt=0.0, description="CPUs reserved per embedding actor.")
    threads: int = Field(2, ge=1, description="Torch threads per embedding actor on CPU.")
    seed: int = Field(0, description="Seed for random init (pretrained: none).")


class ClipFilterConfig(_Section):
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="Reject clip_score below this.")


class DedupConfig(_Section):
    exact: bool = True
    quality: str = Field("clip_score", description="Column whose highest value is kept in a group.")


class OutputConfig(_Section):
    keep_images: bool = Field(True, description="Keep image bytes in kept/ and rejected/.")
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    row_group_size: int = Field(1024, ge=1)


class Config(_Section):
    run: RunConfig = RunConfig()
    input: InputConfig = InputConfig()
    decode: DecodeConfig = DecodeConfig()
    basic: BasicConfig = BasicConfig()
    model: ModelConfig = ModelConfig()
    clip: ClipFilterConfig = ClipFilterConfig()
    dedup: DedupConfig = DedupConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _check_quality_column(self) -> "Config":
        if self.dedup.quality not in QUALITY_COLUMNS:
            raise ValueError(f"dedup.quality must be one of {sorted(QUALITY_COLUMNS)}")
        return self

    def digest(self) -> str:
        """A stable hash of everything that changes the output (not where or how it runs)."""
        data = self.model_dump(mode="json", exclude={"run": True})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


QUALITY_COLUMNS = {"clip_score", "aesthetic", "width"}


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config file (or the defaults), apply `a.b=value` overrides, validate."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file {path} not found: pass the path of a YAML file, e.g. pipelines/demo.yaml")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise UserError(f"config file {path} is not valid YAML{where}: fix the syntax") from None
        if not isinstance(data, dict):
            raise UserError(f"config file {path} must hold a mapping of sections (run, model, basic, ...)")
    for item in overrides:
        _apply_override(data, item)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise UserError(_describe(exc)) from None


def _apply_override(data: dict, item: str) -> None:
    dotted, sep, raw = item.partition("=")
    if not sep or not dotted.strip():
        raise UserError(f"--set {item!r}: write it as section.key=value, e.g. --set model.batch_size=64")
    *parents, leaf = dotted.strip().split(".")
    node = data
    for name in parents:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {item!r}: {name} is not a section")
    try:
        node[leaf] = yaml.safe_load(raw)
    except yaml.YAMLError:
        node[leaf] = raw


def _describe(exc: ValidationError) -> str:
    """One line for the first problem, naming the key and the fix."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "config"
    if err["type"] == "extra_forbidden":
        known = _known_keys(err["loc"][:-1])
        guess = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        hint = f" (did you mean {guess[0]}?)" if guess else f" (known: {', '.join(sorted(known))})"
        return f"config error: unknown key {where}{hint}"
    value = err.get("input")
    shown = f" {value!r}" if not isinstance(value, dict) else ""
    return f"config error: {where}{shown}: {err['msg']}"


def _known_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = Config
    for name in loc:
        field = model.model_fields.get(str(name))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(model.model_fields)
