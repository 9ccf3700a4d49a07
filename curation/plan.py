"""The stages of the score phase, built once from the config on the driver."""

from __future__ import annotations

from dataclasses import dataclass

from curation.config import Config
from curation.models.clip import ModelInfo
from curation.stages.base import BatchStage
from curation.stages.basic import BasicFilter
from curation.stages.clip_filter import ClipScoreFilter
from curation.stages.decode import DecodeStage
from curation.stages.download import DownloadStage
from curation.stages.embed import EmbedStage
from curation.stages.heads import HeadsFilter


@dataclass(frozen=True, kw_only=True)
class StagePlan:
    """The stages of the score phase, built once from the config on the driver."""

    cpu: list[BatchStage]  # before embedding: tasks
    embed: EmbedStage  # actor pool: embeddings, clip_score and every head's score in one pass
    post: list[BatchStage]  # after embedding: cheap filters on the scores

    @classmethod
    def build(cls, cfg: Config, info: ModelInfo) -> "StagePlan":
        return cls(
            cpu=[
                DownloadStage(download=cfg.download),  # fills `image` for URL-list shards; others pass through
                DecodeStage(image_size=info.image_size, max_pixels=cfg.decode.max_pixels),
                BasicFilter(**cfg.basic.model_dump()),
            ],
            embed=EmbedStage(model=cfg.model, image_size=info.image_size, embed_dim=info.embed_dim, heads=cfg.heads),
            # Heads first: an unsafe or watermarked image is rejected for that, not for its clip_score.
            post=[HeadsFilter.from_config(cfg.heads), ClipScoreFilter(min_score=cfg.clip.min_score)],
        )
