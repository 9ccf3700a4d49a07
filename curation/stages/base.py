"""What every stage shares: the batch protocol and the filter template.

A stage is a keyword-only dataclass with `setup()` (load models once per worker) and
`process_batch(table) -> table`. Its resources are declared next to it as class attributes.
A filter only scores: the `Filter` base applies its verdicts to rows still kept and records
status, reject_reason and reject_stage. Rejected rows stay in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.schema import RejectReason, Stage, Status, reason_name


@dataclass(kw_only=True)
class BatchStage:
    """Base of all stages: a pure function of an Arrow table, with a one-off `setup`."""

    name: ClassVar[Stage]
    reject_reasons: ClassVar[tuple[RejectReason, ...]] = ()  # every reason process_batch may write

    def emits(self) -> tuple[str, ...]:
        """The reject reasons this stage writes (a stage whose reasons come from its config overrides it)."""
        return tuple(reason_name(r) for r in self.reject_reasons)

    def setup(self) -> None:
        """Load what the stage needs once per worker (models, tables)."""

    def process_batch(self, table: pa.Table) -> pa.Table:
        raise NotImplementedError


def kept_mask(table: pa.Table) -> np.ndarray:
    return pc.equal(table.column("status"), Status.KEPT.value).to_numpy(zero_copy_only=False)


def set_column(table: pa.Table, name: str, values, type_: pa.DataType | None = None) -> pa.Table:
    array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, type=type_)
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, array)
    return table.append_column(name, array)


def binary_views(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, memoryview | None]:
    """The value boundaries (`ends[i]:ends[i + 1]` is value i) and the data buffer of a binary array,
    for reading its values where Arrow holds them: no Python bytes object per value, no copy."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    values = values.cast(pa.binary())
    _, offsets, data = values.buffers()
    ends = (
        np.frombuffer(offsets, np.int32, len(values) + 1, values.offset * 4)
        if offsets is not None
        else np.zeros(1, np.int32)
    )
    return ends, (memoryview(data) if data is not None else None)


def apply_rejections(table: pa.Table, reasons: list[RejectReason | str | None], stage: Stage) -> pa.Table:
    """Reject each row whose reason is not None; rows already rejected keep their first reason."""
    status = table.column("status").to_pylist()
    reason_col = table.column("reject_reason").to_pylist()
    stage_col = table.column("reject_stage").to_pylist()
    for i, reason in enumerate(reasons):
        if reason is not None and status[i] == Status.KEPT.value:
            status[i] = Status.REJECTED.value
            reason_col[i] = reason_name(reason)
            stage_col[i] = stage.value
    table = set_column(table, "status", status, pa.string())
    table = set_column(table, "reject_reason", reason_col, pa.string())
    return set_column(table, "reject_stage", stage_col, pa.string())


@dataclass(kw_only=True)
class Filter(BatchStage):
    """Template for filters: subclasses implement `verdicts` for the rows still kept."""

    def verdicts(self, kept: pa.Table) -> list[RejectReason | None]:
        """One entry per row of `kept`: None keeps the row, a reason rejects it."""
        raise NotImplementedError

    def process_batch(self, table: pa.Table) -> pa.Table:
        mask = kept_mask(table)
        reasons: list[RejectReason | None] = [None] * table.num_rows
        if mask.any():
            positions = np.flatnonzero(mask)
            for pos, verdict in zip(positions, self.verdicts(table.take(positions))):
                reasons[pos] = verdict
        return apply_rejections(table, reasons, self.name)
