"""Compaction of a refresh chain's dedup state (curation/dedup/state.py): the earlier outputs' kept rows of
each cluster folded, with the output's own, into one base, so that the output no longer needs them. Runs at
the end of a refresh's dedup phase once its chain is longer than `dedup.state_compact_after`, and as
`curate compact-state OUTPUT`; one task per block of clusters."""

from __future__ import annotations

from collections.abc import Callable

import ray

from curation.dedup.state import CENTROIDS, compact_clusters, read_centroids, read_chain, state_chain, write_chain
from curation.errors import UserError
from curation.io.commit import Location


def fold_state(output_url: str, chain: list[str], clusters: int) -> int:
    """Fold `chain`'s kept rows into `output_url`'s _state/kept/, cluster by cluster in tasks, then mark the
    state a base (its chain.json last: an interrupted fold leaves the chain in place and is redone).
    Returns the rows of the base."""
    from curation.execution import task_blocks

    ids = ray.data.range(clusters, override_num_blocks=task_blocks(clusters))
    folded = ids.map_batches(
        compact_clusters, fn_kwargs={"output_url": output_url, "chain": chain}, batch_format="pyarrow"
    )
    rows = sum(int(t.column("rows").to_numpy().sum()) for t in (ray.get(r) for r in folded.to_arrow_refs()))
    write_chain(Location.of(output_url), [])
    return rows


def compact_state(output_url: str, address: str | None = None, log: Callable[[str], None] = print) -> int:
    """`curate compact-state`: fold the earlier refreshes a finished output's state builds on into it.
    Returns how many earlier outputs were folded in (0: the state was a base already)."""
    from curation.config import load_config
    from curation.execution import init_ray

    out = Location.of(output_url)
    if not out.exists("_SUCCESS"):
        raise UserError(
            f"{output_url} holds no finished output (no _SUCCESS): point at the --output of a completed run"
        )
    chain = read_chain(out)
    if not chain:
        log(f"{output_url}/_state is a base already: nothing to compact")
        return 0
    chain = state_chain(chain)  # every earlier output must still be there
    init_ray(load_config(None, [f"run.address={address}"] if address else []))
    clusters = len(read_centroids(out)) if out.exists(CENTROIDS) else 1
    rows = fold_state(output_url, chain, clusters)
    log(f"folded {len(chain)} earlier outputs into {output_url}/_state/kept/ ({rows} rows): they may be deleted")
    return len(chain)
