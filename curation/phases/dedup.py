"""Phase 2 on Ray Data: the job-wide clip_score threshold (keep_fraction), then exact dedup by hash and
near/semantic/previous-refresh/eval dedup per k-means cluster, over only the small columns of the scored
shards. What each group decides is Ray-free (curation/dedup/); this module schedules it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from curation.config import Config
from curation.dedup.decisions import decide_with_sources, resolve_chains
from curation.dedup.exact import exact_group_decisions
from curation.dedup.state import state_chain
from curation.errors import UserError
from curation.io.commit import parquet_bytes
from curation.io.sources import Shard
from curation.job import JobPaths, decisions_table


def keep_fraction_threshold(shards: list[Shard], paths: JobPaths, cfg: Config) -> float | None:
    """DataComp-style top-k %: the clip_score threshold that keeps `clip.keep_fraction` of the rows
    still kept after scoring, over the whole job. Reads one float per row on the driver."""
    if cfg.clip.keep_fraction is None:
        return None

    from curation.io.commit import read_parquet
    from curation.stages.clip_filter import threshold_for_keep_fraction

    scores = []
    for shard in shards:
        table = read_parquet(paths.work, paths.scored_name(shard.shard_id), columns=["clip_score", "status"])
        table = table.filter(pc.equal(table.column("status"), "kept"))
        scores.append(table.column("clip_score").to_numpy(zero_copy_only=False).astype(np.float64))
    values = np.concatenate(scores) if scores else np.zeros(0)
    return threshold_for_keep_fraction(np.nan_to_num(values, nan=np.nan), cfg.clip.keep_fraction)


def run_dedup(shards: list[Shard], paths: JobPaths, cfg: Config, plan, clip_threshold: float | None = None) -> int:
    """Phase 2: exact dedup by hash, then near/semantic/previous-refresh dedup per k-means cluster."""
    from curation.dedup import prepare

    d = cfg.dedup
    files = [paths.work.path(paths.scored_name(s.shard_id)) for s in shards]
    total_rows = sum(_parquet_rows(paths, f) for f in files)
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
    rows = ray.data.from_items(names, override_num_blocks=task_blocks(len(names)))
    rows = rows.map_batches(read_small_columns, batch_size=None, batch_format="pyarrow")
    partitions = partition_count(len(shards), total_rows)
    tables: list[pa.Table] = []
    if cfg.image_filter.reference and total_rows:
        rows, outside = _image_filter(rows, total_rows, cfg, plan)
        tables += outside
    if d.exact and total_rows:
        exact = rows.groupby("sha256", num_partitions=partitions).map_groups(
            decide_with_sources,
            fn_kwargs={"decide": exact_group_decisions, "quality": d.quality},
            batch_format="pyarrow",
        )
        tables += collect(exact)
    paths.out.remove("_state")
    chain = state_chain(d.against)  # the earlier outputs whose _state/kept/ rows this run compares with
    clustered = d.near or d.semantic or bool(d.against) or bool(d.eval_sets)
    if clustered and total_rows:
        from curation.dedup.cluster import ClusterDedup, dedup_cluster
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
        if centroids is not None or plan.embed is None:  # no embedding: no clusters, one group (docs/dedup.md)
            if centroids is not None:
                write_centroids(paths.out, centroids)
            write_chain(paths.out, chain)
            dropped = pa.concat_tables(tables).column("key").combine_chunks() if tables else pa.array([], pa.string())
            settings = ClusterDedup(
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
            grouped = rows.map_batches(
                prepare.with_clusters,
                fn_kwargs={"centroids": centroids, "drop_keys": dropped, "ivf_min_clusters": d.ivf_min_clusters},
                batch_format="pyarrow",
            )
            found = grouped.groupby("cluster", num_partitions=partitions).map_groups(
                decide_with_sources, fn_kwargs={"decide": dedup_cluster, "settings": settings}, batch_format="pyarrow"
            )
            tables += collect(found)
            if len(chain) > d.state_compact_after:
                from curation.phases.state import fold_state

                fold_state(paths.output_url, chain, len(centroids) if centroids is not None else 1)
    decisions = decisions_table([resolve_chains(pa.concat_tables(tables))] if tables else [])
    paths.work.write_bytes(parquet_bytes(decisions, row_group_size=65536), "decisions.parquet")
    return decisions.num_rows


def _image_filter(rows, total_rows: int, cfg: Config, plan) -> tuple:
    """DataComp's image-based filter, before dedup: k-means on a sample of the pool, the reference images'
    nearest clusters, and every row assigned to a cluster. Returns (the rows inside, for dedup; the
    decisions rejecting the rows outside)."""
    from curation.dedup import image_filter, prepare
    from curation.dedup.contamination import embed_eval_sets
    from curation.dedup.semantic import fit_centroids
    from curation.stages.decode import DecodeStage

    f = cfg.image_filter
    rate = min(1.0, f.sample_size / total_rows)
    sample = collect(rows.map_batches(prepare.sample_rows, fn_kwargs={"rate": rate}, batch_format="pyarrow"))
    if not sample:
        return rows, []
    centroids = fit_centroids(prepare.embeddings(pa.concat_tables(sample).sort_by("key")), k=f.clusters, seed=f.seed)
    decode = next(s for s in plan.cpu if isinstance(s, DecodeStage))
    reference = embed_eval_sets(f.reference, [decode, plan.embed], setting="image_filter.reference")
    if reference is None or not reference.num_rows:
        raise UserError(
            f"image_filter.reference {f.reference} holds no decodable images: give folders of images or img2dataset output"
        )
    allowed = image_filter.reference_clusters(prepare.embeddings(reference), centroids, nearest=f.nearest)
    settings = {"centroids": centroids, "allowed": allowed}
    outside = collect(
        rows.map_batches(
            decide_with_sources,
            fn_kwargs={"decide": image_filter.outside_decisions, **settings},
            batch_format="pyarrow",
        )
    )
    return rows.map_batches(image_filter.inside_rows, fn_kwargs=settings, batch_format="pyarrow"), outside


def _eval_rows(eval_sets: list[str], plan, centroids, ivf_min_clusters: int) -> pa.Table | None:
    """The eval sets' images, decoded and embedded like the input (on the driver: eval sets are small)."""
    from curation.dedup.contamination import embed_eval_sets
    from curation.dedup.prepare import embeddings
    from curation.dedup.semantic import assign_clusters
    from curation.stages.decode import DecodeStage

    decode = next(s for s in plan.cpu if isinstance(s, DecodeStage))
    rows = embed_eval_sets(eval_sets, [decode, plan.embed])
    if rows is None or not rows.num_rows:
        return None
    clusters = assign_clusters(embeddings(rows), centroids, ivf_min_clusters=ivf_min_clusters)
    return rows.append_column("cluster", pa.array(clusters, pa.int64()))


def collect(ds) -> list[pa.Table]:
    return [t for t in (ray.get(ref) for ref in ds.to_arrow_refs()) if t.num_rows]


def _parquet_rows(paths: JobPaths, path: str) -> int:
    import pyarrow.parquet as pq

    with paths.work.fs.open(path, "rb") as f:
        return pq.read_metadata(f).num_rows


SHARDS_PER_TASK = 16  # at most, in the phases after scoring, once every CPU has two tasks


def task_blocks(n_shards: int) -> int:
    """Blocks (one task each, its shards handled one after another) for a phase that reads or writes
    whole shards: two per CPU of the cluster, so that the tasks even out, never more than one per shard,
    and more where a task would hold over SHARDS_PER_TASK shards (a retried task redoes them all). A
    task per shard would pay Ray's gap between tasks (~0.15 s on the 2-core box) for every shard."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, min(n_shards, max(2 * cpus, -(-n_shards // SHARDS_PER_TASK))))


ROWS_PER_PARTITION = 1_000_000  # dedup columns ~1.1 KiB a row: ~1-2 GiB per groupby task (docs/sizing.md)


def partition_count(n_shards: int, total_rows: int = 0) -> int:
    """Groupby partitions: one per shard up to 512, and more for large jobs, so that no task holds
    much more than ROWS_PER_PARTITION rows of the dedup columns."""
    return max(2, min(n_shards, 512), -(-total_rows // ROWS_PER_PARTITION))
