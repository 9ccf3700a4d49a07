"""Shared fixtures: one local Ray for the whole test session, and small synthetic worlds."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with 2 CPUs, started once per test session and stopped at its end."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """400 synthetic pairs in 4 webdataset shards, with planted defects and truth."""
    from curation.synth import generate

    root = tmp_path_factory.mktemp("world")
    truth = generate(str(root), rows=400, seed=11, fmt="webdataset", shard_size=100)
    return root, truth
