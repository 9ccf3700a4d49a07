"""The stages of the score phase, built once from the config on the driver."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from curation.config import Config
from curation.dedup.decisions import FILTER_KINDS, REASON_FOR_KIND
from curation.domain import builtin_domain
from curation.io.readers import READ_REASONS
from curation.models.files import BUILTIN
from curation.models.info import ModelInfo
from curation.schema import Stage, reason_name, record_schema
from curation.stages.base import BatchStage
from curation.stages.basic import BasicFilter
from curation.stages.caption import CaptionStage
from curation.stages.clip_filter import ClipScoreFilter
from curation.stages.decode import DecodeStage
from curation.stages.download import DownloadStage
from curation.stages.embed import EmbedStage
from curation.stages.faces import FaceStage
from curation.stages.heads import HeadsFilter
from curation.stages.language import LanguageFilter
from curation.stages.release import ReleaseSourceBytes


@dataclass(frozen=True, kw_only=True)
class StagePlan:
    """The stages of the score phase, built once from the config on the driver."""

    cpu: list[BatchStage]  # before embedding: tasks or the embedding actor (phases/score.py: place_stages)
    embed: EmbedStage | None  # actor pool: embeddings, clip_score and every head's score in one pass;
    # None with model: none (no actor is started: the CPU and post stages run in the reading tasks)
    post: list[BatchStage]  # after embedding: filters on the scores, then privacy on the rows still kept
    schema: pa.Schema  # the record schema of the job's scored and final files (its heads' columns)

    def reject_reasons(self) -> dict[str, list[str]]:
        """Every reason a row of this job can be rejected with, by the stage or phase that writes it:
        what the readers, each stage (as configured: heads name their own) and the dedup phase declare."""
        by_stage = {Stage.READ.value: [reason_name(r) for r in READ_REASONS]}
        for stage in [*self.cpu, *([self.embed] if self.embed else []), *self.post]:
            if stage.emits():
                by_stage.setdefault(str(getattr(stage.name, "value", stage.name)), []).extend(stage.emits())
        by_stage[Stage.DEDUP.value] = [reason_name(r) for r in REASON_FOR_KIND.values()]
        for reason, stage in FILTER_KINDS.items():
            by_stage.setdefault(stage.value, []).append(reason)
        return {stage: list(dict.fromkeys(reasons)) for stage, reasons in by_stage.items()}

    @classmethod
    def build(cls, cfg: Config, info: ModelInfo) -> "StagePlan":
        # Image bytes the input shard holds are let go of after decode unless a later stage reads them
        # (the face stage blurs them); the write phase reads them again from the input.
        release = [ReleaseSourceBytes()] if cfg.privacy.faces == "off" else []
        faces = FaceStage(**cfg.privacy.model_dump(), max_pixels=cfg.decode.max_pixels)
        schema = record_schema(info.embed_dim, tuple(h.score_column for h in cfg.heads))
        if not cfg.has_model:  # no pixels for a model, no embedding, no score to filter on
            return cls(cpu=cls._cpu(cfg, image_size=None, release=release), embed=None, post=[faces], schema=schema)
        domain = builtin_domain(cfg.model.arch) if cfg.model.pretrained == BUILTIN else None
        return cls(
            cpu=cls._cpu(cfg, image_size=info.image_size, release=release),
            embed=EmbedStage(
                model=cfg.model, image_size=info.image_size, embed_dim=info.embed_dim, heads=cfg.heads, domain=domain
            ),
            # Heads first: an unsafe or watermarked image is rejected for that, not for its clip_score.
            # Faces last: only the rows still kept are looked at (and blurred).
            post=[HeadsFilter.from_config(cfg.heads), ClipScoreFilter(min_score=cfg.clip.min_score), faces],
            schema=schema,
        )

    @staticmethod
    def _cpu(cfg: Config, *, image_size: int | None, release: list[BatchStage]) -> list[BatchStage]:
        return [
            # Captions first: a caption that is boilerplate or in an unwanted language costs no
            # download and no decode, and the embedding sees the cleaned, redacted caption.
            CaptionStage(**cfg.caption.model_dump()),
            LanguageFilter(**cfg.language.model_dump()),
            DownloadStage(download=cfg.download),  # fills `image` for URL-list shards; others pass through
            DecodeStage(image_size=image_size, max_pixels=cfg.decode.max_pixels),
            BasicFilter(**cfg.basic.model_dump()),
            *release,
        ]
