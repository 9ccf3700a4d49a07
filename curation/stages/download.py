"""Download the images of URL-list rows: the first CPU stage, a no-op for shards that carry bytes.

The reader leaves a URL-list row kept with `image` null; this stage fetches its `url`
(curation/io/download.py) and fills `image`, or rejects the row with the fetch's reason (http_404,
timeout, too_large, invalid_url, ...). Whether the body is an image is the decode stage's verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.config import DownloadConfig
from curation.io.download import DOWNLOAD_REASONS, download_many
from curation.schema import RejectReason, Stage
from curation.stages.base import BatchStage, apply_rejections, kept_mask, set_column


@dataclass(kw_only=True)
class DownloadStage(BatchStage):
    name: ClassVar[Stage] = Stage.DOWNLOAD
    reject_reasons: ClassVar[tuple[RejectReason, ...]] = DOWNLOAD_REASONS
    download: DownloadConfig = field(default_factory=DownloadConfig)

    def process_batch(self, table: pa.Table) -> pa.Table:
        pending = kept_mask(table) & pc.is_null(table.column("image")).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(pending)
        if not len(rows):
            return table
        fetched = download_many(table.column("url").take(rows).to_pylist(), self.download)
        images = table.column("image").to_pylist()
        reasons: list[RejectReason | None] = [None] * table.num_rows
        for row, result in zip(rows, fetched):
            images[row], reasons[row] = result.data, result.reason
        table = set_column(table, "image", images, pa.binary())
        return apply_rejections(table, reasons, self.name)
