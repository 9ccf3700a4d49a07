"""Whose a work dir is: the run that claimed it (config digest and inputs) and what its scored shards were
scored with (record schema version, package version, model id with its weights digest).

A resume reuses the scored shards of an earlier attempt, so it must not mix scores, embeddings or columns
of another model or another version of the code with new ones: any change is refused with one line that
says what changed, or, with `rescore`, the old scored shards are dropped and scored again.
"""

from __future__ import annotations

import json

from curation import __version__
from curation.errors import UserError
from curation.io.sources import Shard
from curation.io.urls import strip_credentials, strip_credentials_in
from curation.manifest import inputs_digest
from curation.schema import SCHEMA_VERSION

JOB_FILE = "job.json"
SCORED_DIR = "scored"


def scored_with(model_id: str) -> dict:
    """What the shards this code scores depend on, besides the config and inputs."""
    return {"schema_version": SCHEMA_VERSION, "package_version": __version__, "model": model_id}


def check_or_claim_work_dir(
    paths, cfg, input_url: str, shards: list[Shard], model_id: str, *, rescore: bool = False
) -> int:
    """Make sure the work dir belongs to this job (same config, same inputs, same code and model);
    returns the attempt number. The inputs are stored as their count and the digest of their URLs without
    credentials (manifest.inputs_digest): a few bytes at any number of shards. The job file also keeps
    the config and the input URL, for `curate dedup` and `curate write` (without credentials)."""
    digest = cfg.digest()
    inputs = inputs_of(shards)
    current = scored_with(model_id)
    attempt = 1
    if paths.work.exists(JOB_FILE):
        job = _read_job(paths)
        if job.get("config_digest") != digest or recorded_inputs(job) != inputs:
            raise UserError(
                f"{strip_credentials(paths.work_url)} holds an unfinished run with another config or inputs: "
                "use a new --output, or delete that directory to start over"
            )
        earlier = job.get("scored_with", {"schema_version": 1})
        changed = [f"{k} {earlier.get(k)} -> {v}" for k, v in current.items() if earlier.get(k) != v]
        if changed and not rescore:
            raise UserError(
                f"{paths.work_url} holds shards scored with another {', '.join(changed)}: "
                "rerun with --rescore to score them again, or use a new --output"
            )
        if changed:
            paths.work.remove(SCORED_DIR)
        attempt = int(job.get("attempt", 0)) + 1
    job = {
        "config_digest": digest,
        "config": strip_credentials_in(cfg.model_dump(mode="json")),
        "input": strip_credentials(input_url),
        "inputs": inputs,
        "scored_with": current,
        "attempt": attempt,
    }
    paths.work.write_bytes(json.dumps(job, indent=2).encode(), JOB_FILE)
    return attempt


def read_job(paths) -> dict:
    """The job file of a run that claimed the work dir (`curate dedup` / `curate write` start from it)."""
    if not paths.work.exists(JOB_FILE):
        raise UserError(
            f"{strip_credentials(paths.output_url)} holds no work dir of a run ({strip_credentials(paths.work_url)}/"
            f"{JOB_FILE}): run `curate run` first (or pass --set run.work_dir=... where it kept its work dir)"
        )
    job = _read_job(paths)
    if not isinstance(job.get("config"), dict) or not isinstance(job.get("input"), str):
        raise UserError(
            f"{strip_credentials(paths.work_url)}/{JOB_FILE} was written by an older version: run `curate run` again"
        )
    return job


def adopt_config(paths, cfg) -> None:
    """After `curate dedup` / `curate write` with new settings: the work dir is now this config's (a
    `curate run` with it finds the output complete)."""
    job = _read_job(paths)
    job.update(config_digest=cfg.digest(), config=strip_credentials_in(cfg.model_dump(mode="json")))
    paths.work.write_bytes(json.dumps(job, indent=2).encode(), JOB_FILE)


DEDUP_DONE = "decisions/_DONE.json"


def dedup_settings(cfg) -> str:
    """What the dedup phase's decisions depend on besides the scored shards."""
    settings = {"dedup": cfg.dedup.model_dump(mode="json"), "image_filter": cfg.image_filter.model_dump(mode="json")}
    settings["keep_fraction"] = cfg.clip.keep_fraction
    return json.dumps(settings, sort_keys=True)


def mark_dedup_done(paths, cfg, decisions: int) -> None:
    done = {"settings": dedup_settings(cfg), "decisions": decisions}
    paths.work.write_bytes(json.dumps(done).encode(), DEDUP_DONE)


def check_dedup_done(paths, cfg) -> None:
    """`curate write` reuses the last dedup's decisions: they must exist and be of these settings."""
    try:
        done = json.loads(paths.work.read_bytes(DEDUP_DONE)) if paths.work.exists(DEDUP_DONE) else None
    except (ValueError, UnicodeDecodeError):
        done = None
    if not isinstance(done, dict) or done.get("settings") != dedup_settings(cfg):
        raise UserError(
            f"{strip_credentials(paths.output_url)} holds no dedup decisions of these dedup settings: "
            "run `curate dedup` instead of `curate write`"
        )


def inputs_of(shards: list[Shard]) -> dict:
    return {"shards": len(shards), "digest": inputs_digest(s.url for s in shards)}


def recorded_inputs(job: dict) -> dict | None:
    """The inputs a job file records; a work dir of an earlier layout lists their URLs."""
    inputs = job.get("inputs")
    if isinstance(inputs, list) and all(isinstance(url, str) for url in inputs):
        return {"shards": len(inputs), "digest": inputs_digest(inputs)}
    return inputs if isinstance(inputs, dict) else None


def _read_job(paths) -> dict:
    try:
        job = json.loads(paths.work.read_bytes(JOB_FILE))
    except (ValueError, UnicodeDecodeError):
        job = None
    if not isinstance(job, dict):
        raise UserError(
            f"{paths.work_url}/{JOB_FILE} is not a readable job file: delete {paths.work_url} to start over"
        )
    return job
