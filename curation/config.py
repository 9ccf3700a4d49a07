"""The job's configuration: one typed object, loaded from YAML, overridable with `--set a.b=value`.

Defaults are the embedded demo: a config file may be empty.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from curation.errors import UserError
from curation.without_model import NO_MODEL  # model.arch none (pipelines/basic.yaml); re-exported


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunConfig(_Section):
    address: str | None = Field(None, description="Ray cluster address; none starts a local Ray.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray (default: all).")
    work_dir: str | None = Field(None, description="Scored shards and decisions; default <output>/_work.")
    progress: bool | None = Field(None, description="Progress bars; default: only on a terminal.")


# Arrow's binary arrays address at most 2 GiB - 1 bytes: a shard's image column must fit in one.
MAX_SHARD_BYTES_LIMIT = (2 << 30) - 1


class InputConfig(_Section):
    format: str = Field(
        "auto",
        description="auto, or an input format (curation/io/formats/): webdataset, parquet, urls (img2dataset-style "
        "URL lists: .parquet with a url column, .csv, .tsv), hf_datasets (Dataset.save_to_disk folders).",
    )
    max_shard_bytes: int = Field(
        1 << 30,
        ge=1,
        le=MAX_SHARD_BYTES_LIMIT,
        description="Bytes one input shard may bring into memory (a tar's members, a Parquet's images; a reading "
        "task peaks at about this plus its largest image); the samples past it are rejected as shard_too_large, "
        "unread. Split larger shards (at most 2 GiB - 1).",
    )

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        from curation.io.formats import FORMATS  # the plug-ins import this module

        if value != "auto" and value not in FORMATS:
            raise ValueError(f"unknown input format {value!r}: use auto or one of {', '.join(FORMATS)}")
        return value


class DownloadConfig(_Section):
    """Fetching the images of URL-list inputs (see curation/io/download.py)."""

    timeout_s: float = Field(10.0, gt=0, description="Per-request limit, connect to last byte.")
    retries: int = Field(3, ge=0, description="Retries of 429, 5xx, timeouts and resets, with backoff.")
    backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles per retry, with jitter.")
    max_wait_s: float = Field(30.0, ge=0, description="Cap on one backoff or Retry-After wait.")
    max_bytes: int = Field(32 << 20, ge=1, description="Larger bodies are aborted and rejected as too_large.")
    concurrency: int = Field(32, ge=1, description="Requests in flight per reading task.")
    max_redirects: int = Field(5, ge=0)
    user_agent: str = Field("curation/0.1 (image-text dataset curation)", min_length=1)
    respect_opt_out: bool = Field(True, description="Reject X-Robots-Tag noai/noimageai/noindex/noimageindex.")
    allow_private_addresses: bool = Field(
        False, description="Fetch from loopback/private/link-local hosts (off: list URLs cannot probe your network)."
    )


class DecodeConfig(_Section):
    """Where images are decoded. CPU decode (PIL, reduced-scale JPEG decode) runs in Ray tasks or in the
    embedding actor (`placement`); GPU decode (torchvision's batched JPEG decoder on the embedding
    actor's device) pays off for small models, where CPU decode is the bottleneck."""

    max_pixels: int = Field(89_478_485, ge=1, description="Larger images are rejected as decompression bombs.")
    device: Literal["cpu", "gpu"] = Field(
        "cpu",
        description="gpu: JPEGs decoded and resized in batches on the embedding actor's device (CUDA when it has "
        "a GPU; the same code on CPU otherwise); other formats and failures fall back to the CPU decoder per image.",
    )
    placement: Literal["auto", "tasks", "actor"] = Field(
        "auto",
        description="Where the CPU stages (download, decode, basic, ...) run: tasks (separate Ray tasks feeding the "
        "actor pool, so a GPU never waits on decode) or actor (inside the embedding actor: no hand-off, best on "
        "a few CPU cores); auto: tasks when the embedding actors have GPUs, else actor.",
    )


PII_KINDS = ("email", "phone", "credit_card", "iban", "street_address", "personal_url")


class CaptionConfig(_Section):
    """Caption hygiene and personal data in captions (see curation/stages/caption.py)."""

    clean: bool = Field(True, description="Strip HTML tags and entities, normalise unicode (NFKC) and whitespace.")
    reject_boilerplate: bool = Field(
        True, description="Reject captions that are file names or boilerplate (image, IMG_1234, click here, ...)."
    )
    pii: Literal["redact", "reject", "off"] = Field(
        "redact",
        description="Personal data in captions: replace it with a [KIND] placeholder, reject the row, or leave it.",
    )
    pii_kinds: tuple[Literal[PII_KINDS], ...] = Field(PII_KINDS, description="Kinds of personal data looked for.")


class LanguageConfig(_Section):
    """Caption language identification (see curation/stages/language.py)."""

    keep: tuple[str, ...] = Field(
        ("en",), description="ISO 639-1 codes to keep; empty: keep every language (still labelled)."
    )
    min_score: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Below this confidence a caption's language counts as unknown and the row is kept.",
    )


class PrivacyConfig(_Section):
    """Faces in kept images (see curation/stages/faces.py): OpenCV's bundled face cascades."""

    faces: Literal["blur", "reject", "off"] = Field(
        "off",
        description="blur: faces blurred in the kept image bytes; reject: rows with faces rejected; off (the demo: "
        "its synthetic world has no people). pipelines/datacomp_style.yaml blurs, as DataComp's release did.",
    )
    min_face_px: int = Field(20, ge=8, description="Smallest face side looked for, in pixels of the analysed image.")


class BasicConfig(_Section):
    """DataComp 'basic' rules."""

    min_caption_chars: int = Field(6, ge=0, description="Captions shorter than this are rejected.")
    min_caption_words: int = Field(3, ge=0, description="Captions with fewer words are rejected.")
    min_short_side: int = Field(32, ge=1, description="Images whose short side is smaller are rejected.")
    max_aspect: float = Field(3.0, ge=1.0, description="Images with long/short side above this are rejected.")
    min_image_bytes: int = Field(0, ge=0, description="Image files smaller than this are rejected (LAION: 5000).")


class ModelConfig(_Section):
    arch: str = Field(
        "curation-tiny",
        description="open_clip architecture name; none: no CLIP at all (no embeddings, clip_score or heads; "
        "dedup by hashes alone, see pipelines/basic.yaml).",
    )
    pretrained: str | None = Field(
        "builtin",
        description="builtin (the trained tiny CLIP the package ships), an open_clip tag, a local "
        ".safetensors path, or none for random init.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: cuda when num_gpus > 0 and one is visible."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Autocast dtype on CUDA; auto: bf16 on CUDA, fp32 on CPU (CPU autocast is slower)."
    )
    batch_size: int = Field(256, ge=1, description="Images per forward pass.")
    actors: int | Literal["auto"] = Field(
        "auto",
        description="Embedding actors in the pool; auto: the cluster's GPUs / num_gpus when num_gpus > 0, else 1.",
    )
    num_gpus: float = Field(0.0, ge=0.0, description="GPUs per embedding actor; > 0 places it on a GPU.")
    num_cpus: float = Field(1.0, gt=0.0, description="CPUs reserved per embedding actor.")
    threads: int = Field(
        2,
        ge=1,
        description="CPU threads per embedding actor, shared by its concurrent calls (torch and, with "
        "decode.placement=actor, decoding).",
    )
    calls_per_actor: int | Literal["auto"] = Field(
        "auto",
        description="Shards an embedding actor works on at once, each with threads / calls_per_actor threads: while "
        "one call decodes, another runs the model. auto: threads on CPU actors with decode.placement=actor, else 1.",
    )
    seed: int = Field(0, description="Seed for random init (pretrained: none).")

    @field_validator("actors", "calls_per_actor", mode="before")
    @classmethod
    def _positive_or_auto(cls, value):
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError("use a positive whole number or auto")


class ClipFilterConfig(_Section):
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="Reject clip_score below this.")
    keep_fraction: float | None = Field(
        None, gt=0.0, le=1.0, description="Keep this top fraction by clip_score over the whole job (DataComp-style)."
    )


# The built-in heads' default reject reasons (score column -> reason); any other head's default is its column.
BUILTIN_HEAD_REASONS = {"unsafe": "unsafe", "watermark": "watermark", "aesthetic": "low_aesthetic"}


class HeadConfig(_Section):
    """A classifier head on the embedding pass: trained weights or zero-shot prompts, a threshold, a reason.
    Any number of heads, any names: each fills its own float32 score column of the record schema."""

    name: str = Field(min_length=1, description="The head's name; builtin weights are looked up by it.")
    column: str | None = Field(
        None, description="Score column it fills (an identifier, not a record column); default: its name."
    )
    weights: str | None = Field(
        None,
        description="builtin (shipped with the model) or a .safetensors path (`curate train-head`, `curate convert-head`).",
    )
    prompts: tuple[str, ...] = Field((), description="Zero-shot: text prompts for the positive class.")
    negative_prompts: tuple[str, ...] = Field(("a photo",), description="Zero-shot: prompts for the rest.")
    threshold: float | None = Field(
        None, description="Reject beyond this (a probability, or the head's own scale, e.g. 1-10); none only scores."
    )
    reject: Literal["above", "below"] = Field("above", description="Reject scores above or below the threshold.")
    reason: str | None = Field(
        None,
        description="Reject reason (any identifier); default: unsafe, watermark, low_aesthetic for the built-in "
        "columns, else the column's name.",
    )

    @model_validator(mode="after")
    def _check(self) -> "HeadConfig":
        from curation.schema import REASON_PATTERN, core_columns

        column = self.column or self.name
        if not REASON_PATTERN.fullmatch(column):
            raise ValueError(
                f"head {self.name!r}: its column {column!r} must be an identifier (lower case letters, digits, _): "
                "set column"
            )
        if column in core_columns():
            raise ValueError(f"head {self.name!r}: {column!r} is a record column already: set column to another name")
        if (self.weights is None) == (not self.prompts):
            raise ValueError(f"head {self.name!r}: give exactly one of weights (builtin or a path) and prompts")
        if self.reason is not None and not REASON_PATTERN.fullmatch(self.reason):
            raise ValueError(
                f"head {self.name!r}: reason {self.reason!r} must be an identifier (lower case letters, digits, _)"
            )
        if self.threshold is not None and (self.prompts or self.weights == "builtin") and not 0 <= self.threshold <= 1:
            raise ValueError(f"head {self.name!r}: its scores are probabilities: give a threshold between 0 and 1")
        return self

    @property
    def score_column(self) -> str:
        return self.column or self.name

    @property
    def reject_reason(self) -> str:
        return self.reason or BUILTIN_HEAD_REASONS.get(self.score_column, self.score_column)


DEFAULT_HEADS = (
    HeadConfig(name="unsafe", weights="builtin", threshold=0.5),
    HeadConfig(name="watermark", weights="builtin", threshold=0.5),
    HeadConfig(name="aesthetic", weights="builtin", threshold=0.25, reject="below"),
)


class DedupConfig(_Section):
    """Exact (sha256), near (pHash Hamming) and semantic (SemDeDup) dedup, also against earlier runs."""

    exact: bool = True
    near: bool = True
    near_radius: int = Field(12, ge=0, le=32, description="pHash Hamming distance that makes a near duplicate.")
    near_min_cosine: float = Field(
        0.9, ge=-1.0, le=1.0, description="...and image embeddings at least this similar (-1: pHash alone)."
    )
    semantic: bool = True
    semantic_eps: float = Field(0.02, ge=0.0, le=1.0, description="Pairs with cosine >= 1 - eps are duplicates.")
    semantic_text_eps: float | None = Field(
        None,
        ge=0.0,
        le=2.0,
        description="...and their captions' text embeddings at cosine >= 1 - this (null: images alone, as SemDeDup).",
    )
    clusters: int | None = Field(
        None, ge=1, description="k-means clusters (null: rows / rows_per_cluster, at most max_clusters)."
    )
    rows_per_cluster: int = Field(2_000, ge=1, description="Rows per k-means cluster the default k aims at.")
    max_clusters: int = Field(
        50_000, ge=1, description="Cap of the default k: its fit sample (40 rows a centroid) is read on the driver."
    )
    sample_size: int = Field(
        100_000, ge=1, description="Rows sampled to fit the k-means centroids, at least (40 per centroid beyond)."
    )
    ivf_min_clusters: int = Field(
        16_384,
        ge=1,
        description="From this many centroids rows are assigned through an inverted file (faster, some misses: "
        "docs/dedup.md); keep it the same along a refresh chain.",
    )
    second_cluster_margin: float = Field(
        0.01,
        ge=0.0,
        le=2.0,
        description="A row this close (cosine) to its second-nearest centroid is also compared with that "
        "cluster's rows, so copies split by a cluster boundary are found (0: nearest cluster only).",
    )
    seed: int = 0
    quality: str = Field("clip_score", description="Column whose highest value is kept in a group.")
    against: list[str] = Field(
        default_factory=list, description="Earlier outputs whose kept rows new rows must not duplicate."
    )
    state_compact_after: int = Field(
        8, ge=1, description="Earlier refreshes a _state/ may build on before a run folds them into one base."
    )
    eval_sets: list[str] = Field(
        default_factory=list,
        description="Eval image sets (folders of images or img2dataset output) no kept pair may duplicate.",
    )
    eval_eps: float | None = Field(
        None, ge=0.0, le=1.0, description="Cosine distance that makes a pair an eval image's copy (null: semantic_eps)."
    )


class ImageFilterConfig(_Section):
    """DataComp's image-based filter: keep only rows whose image embedding falls in a k-means cluster (fitted
    on the pool) that is among the `nearest` clusters of some reference image (DataComp: ImageNet train)."""

    reference: list[str] = Field(
        default_factory=list,
        description="Reference image sets (folders of images or img2dataset output); empty: the filter is off.",
    )
    clusters: int = Field(100, ge=1, description="k-means clusters of the pool's image embeddings (DataComp: 100,000).")
    nearest: int = Field(1, ge=1, description="Clusters kept per reference image: its nearest centroids.")
    sample_size: int = Field(100_000, ge=1, description="Pool rows sampled to fit the centroids.")
    seed: int = 0


class ResizeConfig(_Section):
    """Images resized for the exports (webdataset), as img2dataset resizes them; kept/ keeps the originals."""

    mode: Literal["keep_ratio", "center_crop", "border"] = Field(
        description="keep_ratio: the short side to size; center_crop: the short side to size, then the centre "
        "size x size; border: the long side to size, then white borders to size x size."
    )
    size: int = Field(ge=1, description="Pixels (img2dataset's image_size; training sets use 256-512).")
    quality: int = Field(95, ge=1, le=100, description="JPEG / WebP quality of the re-encoded images.")
    format: Literal["jpg", "png", "webp"] = Field("jpg", description="Encoding of the resized images.")
    only_if_bigger: bool = Field(False, description="Leave images that are already small enough as they are.")


OUTPUT_FORMATS = ("parquet", "webdataset")


class OutputConfig(_Section):
    keep_images: bool = Field(True, description="Keep image bytes in kept/ (and, with rejected_images, rejected/).")
    rejected_images: bool = Field(
        False,
        description="Also keep the image bytes of rejected/ rows. Off: a rejected row's image is null and its `source` "
        "(the input shard, the manifest's inputs), `key`, `url` and `sha256` name its bytes; `curate export OUTPUT "
        "--rejected-images` reads them back from the input (docs/export.md).",
    )
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    row_group_size: int = Field(1024, ge=1)
    formats: tuple[Literal[OUTPUT_FORMATS], ...] = Field(
        ("parquet",),
        description="parquet: kept/ and rejected/ (always written); webdataset: also <output>/webdataset/, the kept "
        "rows as img2dataset-style tars a trainer reads (docs/export.md).",
    )
    embeddings: Literal["npy"] | None = Field(
        None, description="npy: also <output>/embeddings/, the kept rows' embeddings in clip-retrieval's layout."
    )
    shard_rows: int = Field(10_000, ge=1, description="Rows per export shard (tar, embedding file).")
    shard_mb: float | None = Field(
        None, gt=0, description="Also close a tar before it passes this many MB (webdataset)."
    )
    resize: ResizeConfig | None = Field(None, description="Resize the exported images (not kept/).")

    @field_validator("formats")
    @classmethod
    def _parquet_first(cls, formats: tuple[str, ...]) -> tuple[str, ...]:
        if "parquet" not in formats:
            raise ValueError(
                "must include parquet: kept/ and rejected/ are the job's record, the other formats are made from them"
            )
        if len(set(formats)) != len(formats):
            raise ValueError("lists a format twice")
        return formats

    @model_validator(mode="after")
    def _images_for_webdataset(self) -> "OutputConfig":
        if "webdataset" in self.formats and not self.keep_images:
            raise ValueError("formats: webdataset needs the images: set keep_images: true")
        if self.rejected_images and not self.keep_images:
            raise ValueError("rejected_images: true needs keep_images: true (no image bytes are kept at all)")
        return self


class Config(_Section):
    run: RunConfig = RunConfig()
    input: InputConfig = InputConfig()
    download: DownloadConfig = DownloadConfig()
    caption: CaptionConfig = CaptionConfig()
    language: LanguageConfig = LanguageConfig()
    decode: DecodeConfig = DecodeConfig()
    basic: BasicConfig = BasicConfig()
    model: ModelConfig = ModelConfig()
    clip: ClipFilterConfig = ClipFilterConfig()
    heads: tuple[HeadConfig, ...] = Field(DEFAULT_HEADS, description="Classifier heads on the embedding pass.")
    privacy: PrivacyConfig = PrivacyConfig()
    dedup: DedupConfig = DedupConfig()
    image_filter: ImageFilterConfig = ImageFilterConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="before")
    @classmethod
    def _without_model(cls, data):
        from curation.without_model import defaults_without_model

        return defaults_without_model(data)

    @property
    def has_model(self) -> bool:
        return self.model.arch != NO_MODEL

    @model_validator(mode="after")
    def _check_quality_column(self) -> "Config":
        columns = [h.score_column for h in self.heads]
        if self.dedup.quality not in QUALITY_COLUMNS | set(columns):
            raise ValueError(f"dedup.quality must be one of {sorted(QUALITY_COLUMNS | set(columns))}")
        if len(set(columns)) != len(columns):
            raise ValueError(f"heads: two heads fill the same column ({', '.join(columns)}): one head per column")
        if not self.has_model:
            from curation.without_model import refuse_what_needs_a_model

            refuse_what_needs_a_model(self)
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
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"config file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
        except OSError as exc:
            raise UserError(
                f"config file {path} cannot be read ({exc.strerror or exc}): check its permissions"
            ) from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise UserError(f"config file {path} is not valid YAML{where}: fix the syntax") from None
        if not isinstance(data, dict):
            raise UserError(f"config file {path} must hold a mapping of sections (run, model, basic, ...)")
    return config_from(data, overrides)


def config_from(data: dict, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A config from its dict form (a YAML file's, or a stored dump), with `a.b=value` overrides."""
    data = copy.deepcopy(data)
    for item in overrides:
        _apply_override(data, item)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise UserError(_describe(exc)) from None


def changed_settings(before: Config, after: Config) -> list[str]:
    """The dotted names of the settings that differ (a section's whole name where it is a list)."""

    def flat(data, prefix: str = "") -> dict:
        if not isinstance(data, dict):
            return {prefix: data}
        return {k: v for name, value in data.items() for k, v in flat(value, f"{prefix}{name}.").items()}

    a, b = flat(before.model_dump(mode="json")), flat(after.model_dump(mode="json"))
    return sorted(name.rstrip(".") for name in set(a) | set(b) if a.get(name) != b.get(name))


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
    message = err["msg"].removeprefix("Value error, ")
    if not err["loc"]:  # a check across sections: its message names the keys
        return f"config error: {message}"
    return f"config error: {where}{shown}: {message}"


def _known_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = Config
    for name in loc:
        field = model.model_fields.get(str(name))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(model.model_fields)
