"""Phase 2: the job-wide clip_score threshold (keep_fraction), then exact dedup by hash and
near/semantic/previous-refresh/eval dedup per k-means cluster, over only the small columns of the scored
shards. What each group decides is in curation/dedup/; this module says which datasets flow where, and
curation/execution.py how they run on Ray (it imports no Ray itself)."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from curation.config import Config
from curation.dedup.decisions import decide_with_sources
from curation.dedup.state import state_chain
from curation.errors import UserError
from curation.execution import co_located, collect, in_task, over_items, partition_count
from curation.io.commit import parquet_bytes
from curation.io.sources import Shard
from curation.job import DECISIONS_DIR, JobPaths


def keep_fraction_threshold(shards: list[Shard], paths: JobPaths, cfg: Config) -> float | None:
    """DataComp-style top-k %: the clip_score threshold that keeps `clip.keep_fraction` of the rows
    still kept after scoring, over the whole job, exactly as sorting every score would give it, from
    the scored shards' histograms summed on the cluster (curation/dedup/keep_fraction.py): no score
    comes to the driver, only two histograms of at most 65,536 counts."""
    if cfg.clip.keep_fraction is None:
        return None
    from curation.dedup import keep_fraction as kf

    counts = _summed_histogram(shards, paths, bucket=None)
    if not counts:
        return float("-inf")
    bucket, rank = kf.boundary(counts, kf.rows_to_keep(sum(counts.values()), cfg.clip.keep_fraction))
    low, _ = kf.boundary(_summed_histogram(shards, paths, bucket=bucket), rank)
    return kf.from_key((bucket << 16) | low)


def _summed_histogram(shards: list[Shard], paths: JobPaths, bucket: int | None) -> dict[int, int]:
    """The scored shards' clip_score histograms (top 16 bits of the keys; with `bucket`, the low 16 bits
    of the keys in that bucket), summed by tasks and then by a groupby: per bucket, not per shard."""
    work = paths.work
    names = [{"name": paths.scored_name(s.shard_id)} for s in shards]

    def histograms(batch: pa.Table) -> pa.Table:

        total: Counter = Counter()
        for name in batch.column("name").to_pylist():
            total.update(_shard_histogram(work, name, bucket))
        return pa.table({"bucket": list(total), "count": list(total.values())}, schema=HISTOGRAM_SCHEMA)

    summed = over_items(names, histograms).groupby("bucket").sum("count")
    return {row["bucket"]: row["sum(count)"] for row in summed.iter_rows()}


HISTOGRAM_SCHEMA = pa.schema([("bucket", pa.int64()), ("count", pa.int64())])


def _shard_histogram(work, name: str, bucket: int | None) -> dict[int, int]:
    import pyarrow.parquet as pq

    from curation.dedup import keep_fraction as kf
    from curation.io.commit import read_parquet

    if bucket is None:
        with work.fs.open(work.path(name), "rb") as f:
            found = kf.read_histogram(pq.read_schema(f).metadata)
        if found is not None:
            return found
    table = read_parquet(work, name, columns=["clip_score", "status"])
    if bucket is None:  # a shard scored before histograms were stored
        return kf.histogram(kf.kept_keys(table))
    return kf.histogram(kf.keys_in_bucket(table, bucket), shift=0)


def scored_rows(shards: list[Shard], paths: JobPaths) -> int:
    """Rows of all scored shards, from their footers, read by tasks."""
    work = paths.work

    def rows(batch: pa.Table) -> pa.Table:
        import pyarrow.parquet as pq

        counts = []
        for name in batch.column("name").to_pylist():
            with work.fs.open(work.path(name), "rb") as f:
                counts.append(pq.read_metadata(f).num_rows)
        return pa.table({"rows": pa.array(counts, pa.int64())})

    names = [{"name": paths.scored_name(s.shard_id)} for s in shards]
    return int(over_items(names, rows).sum("rows") or 0)


def run_dedup(shards: list[Shard], paths: JobPaths, cfg: Config, plan, clip_threshold: float | None = None) -> int:
    """Phase 2: exact dedup by hash, then near/semantic/previous-refresh dedup per k-means cluster; the
    decisions are written by tasks, one file per source shard (decisions/<shard>.parquet): none of
    them comes to the driver. Exact copies go to their survivor's cluster, so every chain of decisions
    (a copy of a near copy, say) resolves inside one cluster's task. Returns the number of decisions."""
    from curation.dedup import prepare
    from curation.dedup.exact import decide_with_copies, exact_groups

    d = cfg.dedup
    paths.work.remove(DECISIONS_DIR)  # an earlier dedup's (a resumed job, `curate dedup`)
    total_rows = scored_rows(shards, paths)
    text = ["txt_emb"] if d.semantic and d.semantic_text_eps is not None else []
    columns = list(dict.fromkeys(["key", "source", "sha256", "phash", "img_emb", *text, "status", d.quality]))
    # Plain tasks read the scored files (Ray retries a task whose node dies; a listing actor it does not).
    work = paths.work

    def read_small_columns(batch: pa.Table) -> pa.Table:
        from curation.io.commit import read_parquet

        tables = [read_parquet(work, name, columns=columns) for name in batch.column("name").to_pylist()]
        kept = [prepare.kept_rows(t, min_clip_score=clip_threshold) for t in tables]
        return pa.concat_tables(kept)

    names = [{"name": paths.scored_name(s.shard_id)} for s in shards]
    rows = over_items(names, read_small_columns)
    partitions = partition_count(len(shards), total_rows)
    decided = []  # datasets of decisions (SOURCED_DECISION_SCHEMA)
    if cfg.image_filter.reference and total_rows:
        rows, outside = _image_filter(rows, total_rows, cfg, plan)
        decided += [outside] if outside is not None else []
    paths.out.remove("_state")
    chain = state_chain(d.against)  # the earlier outputs whose _state/kept/ rows this run compares with
    clustered = (d.near or d.semantic or bool(d.against) or bool(d.eval_sets)) and total_rows > 0
    centroids = None
    if clustered:
        from curation.dedup.semantic import fit_centroids
        from curation.dedup.state import previous_centroids, write_centroids, write_chain

        centroids = previous_centroids(d.against)
        if centroids is None and plan.embed is not None:
            k = d.clusters or prepare.default_clusters(
                total_rows, rows_per_cluster=d.rows_per_cluster, max_clusters=d.max_clusters
            )
            rate = prepare.sample_rate(total_rows, clusters=k, sample_size=d.sample_size)
            sample = collect(rows.map_batches(prepare.sample_rows, fn_kwargs={"rate": rate}, batch_format="pyarrow"))
            sample = pa.concat_tables(sample).sort_by("key") if sample else None
            if sample is not None and sample.num_rows:
                k = min(k, max(1, sample.num_rows // prepare.POINTS_PER_CENTROID)) if not d.clusters else k
                centroids = fit_centroids(
                    prepare.embeddings(sample, dtype=None), k=min(k, sample.num_rows), seed=d.seed
                )
        # No embedding (model: none): one cluster, all against all by pHash (docs/dedup.md); no sample: exact only.
        clustered = centroids is not None or plan.embed is None
        if centroids is not None:
            write_centroids(paths.out, centroids)
        if clustered:
            write_chain(paths.out, chain)
    margin = d.second_cluster_margin if centroids is not None and len(centroids) > 1 else 0.0
    if clustered:
        rows = rows.map_batches(
            prepare.with_clusters,
            fn_kwargs={"centroids": centroids, "ivf_min_clusters": d.ivf_min_clusters, "margin": margin},
            batch_format="pyarrow",
        )
    if d.exact and total_rows:
        rows = _by_hash(rows, partitions).map_batches(
            exact_groups,
            fn_kwargs={"quality": d.quality, "ride_along": clustered},
            batch_size=None,
            batch_format="pyarrow",
        )
        if not clustered:
            decided.append(rows)
    elif clustered:
        rows = rows.map_batches(_without_copies, batch_format="pyarrow")
    if clustered:
        from curation.dedup.cluster import dedup_cluster

        settings = _cluster_settings(cfg, plan, centroids, paths, chain)
        rows = rows.map_batches(prepare.with_guests, batch_format="pyarrow")
        found = rows.groupby("cluster", num_partitions=partitions).map_groups(
            decide_with_copies, fn_kwargs={"decide": dedup_cluster, "settings": settings}, batch_format="pyarrow"
        )
        decided.append(_follow_chains(found, partitions) if margin > 0 else found)
    n_decisions = _write_decisions(decided, paths, partitions)
    if clustered and len(chain) > d.state_compact_after:
        from curation.phases.state import fold_state

        fold_state(paths.output_url, chain, len(centroids) if centroids is not None else 1)
    return n_decisions


MAX_CHAIN_ROUNDS = 64  # each round halves every chain; a dup_of always ranks higher, so none is circular


def _follow_chains(decisions, partitions: int):
    """Decisions whose dup_of was decided in another cluster (a guest's own fate) pointed at a kept row,
    by rounds of pointer jumping over a shuffle of the decisions alone (curation/dedup/decisions.py)."""
    from curation.dedup.decisions import as_chain_rows, follow_chains

    for _ in range(MAX_CHAIN_ROUNDS):
        rows = decisions.materialize().map_batches(as_chain_rows, batch_format="pyarrow")
        followed = co_located(rows, "node", partitions).map_batches(
            follow_chains, batch_size=None, batch_format="pyarrow"
        )
        followed = followed.materialize()
        decisions = followed.drop_columns(["moved"])
        if not int(followed.map_batches(_moved, batch_format="pyarrow").sum("moved") or 0):
            break
    return decisions


def _moved(batch: pa.Table) -> pa.Table:
    return pa.table({"moved": [int(pc.sum(batch.column("moved").cast(pa.int64())).as_py() or 0)]})


def _by_hash(rows, partitions: int):
    return co_located(rows, "sha256", partitions)


def _without_copies(batch: pa.Table) -> pa.Table:
    from curation.dedup.exact import EXACT_OF

    return batch.append_column(EXACT_OF, pa.nulls(batch.num_rows, pa.string()))


def _cluster_settings(cfg: Config, plan, centroids, paths: JobPaths, chain: list[str]):
    from curation.dedup.cluster import ClusterDedup

    d = cfg.dedup
    return ClusterDedup(
        eval_rows=_eval_rows(d.eval_sets, plan, centroids, d.ivf_min_clusters) if d.eval_sets else None,
        quality=d.quality,
        near=d.near,
        near_radius=d.near_radius,
        near_min_cosine=d.near_min_cosine,
        semantic=d.semantic,
        semantic_eps=d.semantic_eps,
        semantic_text_eps=d.semantic_text_eps,
        eval_eps=d.eval_eps,
        against=chain,
        state_url=paths.output_url,
    )


def _write_decisions(decided: list, paths: JobPaths, partitions: int) -> int:
    """Write the decisions by tasks, one file per source shard, sorted by key; returns their number."""
    if not decided:
        return 0
    work = paths.work

    def write(group: pa.Table) -> pa.Table:
        source = group.column("source")[0].as_py()
        work.write_bytes(parquet_bytes(group.sort_by("key"), row_group_size=65536), paths.decisions_name(source))
        return pa.table({"decisions": [group.num_rows]})

    decisions = decided[0].union(*decided[1:]) if len(decided) > 1 else decided[0]
    written = decisions.groupby("source", num_partitions=partitions).map_groups(write, batch_format="pyarrow")
    return int(written.sum("decisions") or 0)


def _image_filter(rows, total_rows: int, cfg: Config, plan) -> tuple:
    """DataComp's image-based filter, before dedup: k-means on a sample of the pool, the reference images'
    nearest clusters (the references read and embedded by a task), and every row assigned to a cluster.
    Returns (the rows inside, for dedup; a dataset of the decisions rejecting the rows outside, or None)."""
    from curation.dedup import image_filter, prepare
    from curation.dedup.semantic import fit_centroids

    f = cfg.image_filter
    rate = min(1.0, f.sample_size / total_rows)
    sample = collect(rows.map_batches(prepare.sample_rows, fn_kwargs={"rate": rate}, batch_format="pyarrow"))
    if not sample:
        return rows, None
    centroids = fit_centroids(prepare.embeddings(pa.concat_tables(sample).sort_by("key")), k=f.clusters, seed=f.seed)
    allowed = in_task(_reference_clusters, f.reference, _embedding_stages(plan), centroids, f.nearest)
    settings = {"centroids": centroids, "allowed": allowed}
    outside = rows.map_batches(
        decide_with_sources, fn_kwargs={"decide": image_filter.outside_decisions, **settings}, batch_format="pyarrow"
    )
    return rows.map_batches(image_filter.inside_rows, fn_kwargs=settings, batch_format="pyarrow"), outside


def _embedding_stages(plan) -> list:
    from curation.stages.decode import DecodeStage

    return [next(s for s in plan.cpu if isinstance(s, DecodeStage)), plan.embed]


def _reference_clusters(reference: list[str], stages: list, centroids, nearest: int):
    """The clusters near image_filter.reference's images, read, decoded and embedded here, in a task."""
    from curation.dedup import image_filter
    from curation.dedup.contamination import embed_eval_sets
    from curation.dedup.prepare import embeddings

    rows = embed_eval_sets(reference, stages, setting="image_filter.reference")
    if rows is None or not rows.num_rows:
        raise UserError(
            f"image_filter.reference {reference} holds no decodable images: give folders of images or img2dataset output"
        )
    return image_filter.reference_clusters(embeddings(rows), centroids, nearest=nearest)


def _eval_rows(eval_sets: list[str], plan, centroids, ivf_min_clusters: int) -> pa.Table | None:
    """The eval sets' images, decoded, embedded and assigned to clusters like the input, by a task."""
    return in_task(_embedded_eval_rows, eval_sets, _embedding_stages(plan), centroids, ivf_min_clusters)


def _embedded_eval_rows(eval_sets: list[str], stages: list, centroids, ivf_min_clusters: int) -> pa.Table | None:
    from curation.dedup.contamination import embed_eval_sets
    from curation.dedup.prepare import embeddings
    from curation.dedup.semantic import assign_clusters

    rows = embed_eval_sets(eval_sets, stages)
    if rows is None or not rows.num_rows:
        return None
    clusters = assign_clusters(embeddings(rows), centroids, ivf_min_clusters=ivf_min_clusters)
    return rows.append_column("cluster", pa.array(clusters, pa.int64()))


def _parquet_rows(paths: JobPaths, path: str) -> int:
    import pyarrow.parquet as pq

    with paths.work.fs.open(path, "rb") as f:
        return pq.read_metadata(f).num_rows
