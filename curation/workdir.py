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
from curation.io.urls import strip_credentials
from curation.manifest import inputs_digest
from curation.schema import SCHEMA_VERSION

JOB_FILE = "job.json"
SCORED_DIR = "scored"


def scored_with(model_id: str) -> dict:
    """What the shards this code scores depend on, besides the config and inputs."""
    return {"schema_version": SCHEMA_VERSION, "package_version": __version__, "model": model_id}


def check_or_claim_work_dir(paths, digest: str, shards: list[Shard], model_id: str, *, rescore: bool = False) -> int:
    """Make sure the work dir belongs to this job (same config, same inputs, same code and model);
    returns the attempt number. The inputs are stored as their count and the digest of their URLs without
    credentials (manifest.inputs_digest): a few bytes at any number of shards."""
    inputs = {"shards": len(shards), "digest": inputs_digest(s.url for s in shards)}
    current = scored_with(model_id)
    attempt = 1
    if paths.work.exists(JOB_FILE):
        job = _read_job(paths)
        if job.get("config_digest") != digest or _inputs_of(job) != inputs:
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
    job = {"config_digest": digest, "inputs": inputs, "scored_with": current, "attempt": attempt}
    paths.work.write_bytes(json.dumps(job, indent=2).encode(), JOB_FILE)
    return attempt


def _inputs_of(job: dict) -> dict | None:
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
