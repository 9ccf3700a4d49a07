"""Run one job on a simulated 3-node Ray cluster (a subprocess of test_multinode.py).

Usage: python multinode_job.py <input> <output> [--remove-node]
With --remove-node, the node with the most CPUs is removed while shards are being scored.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from curation.config import load_config  # noqa: E402
from curation.runner import run_job  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    input_dir, output = sys.argv[1], sys.argv[2]
    remove = "--remove-node" in sys.argv
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1, resources={"small": 1})
    big = cluster.add_node(num_cpus=2, resources={"big": 1})
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    removed = []

    def remove_big_node():
        scored = Path(output) / "_work" / "scored"
        deadline = time.time() + 240
        while time.time() < deadline:
            if scored.exists() and len(list(scored.glob("*.parquet"))) >= 3:
                cluster.remove_node(big, allow_graceful=False)
                removed.append(True)
                return
            time.sleep(0.05)

    if remove:
        threading.Thread(target=remove_big_node, daemon=True).start()
    overrides = [a for a in sys.argv[3:] if a != "--remove-node"]
    cfg = load_config(REPO / "pipelines/demo.yaml", overrides)
    run_job(cfg, input_dir, output, log=lambda _: None)
    nodes = len(ray.nodes())
    ray.shutdown()
    cluster.shutdown()
    print(f"nodes={nodes} removed={bool(removed)}")


if __name__ == "__main__":
    main()
