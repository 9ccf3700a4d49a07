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
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """400 synthetic pairs in 4 webdataset shards, with planted defects and truth."""
    from curation.lab.synth import generate

    root = tmp_path_factory.mktemp("world")
    truth = generate(str(root), rows=400, seed=11, fmt="webdataset", shard_size=100)
    return root, truth


@pytest.fixture(scope="session")
def score_unseen_world(tmp_path_factory):
    """A function: (seed, rows, shard_size, columns) -> (truth, one list of values per column over every
    row), for a world generated from `seed` and scored by pipelines/demo.yaml's score-phase stages run
    directly (no Ray)."""
    from curation.config import load_config
    from curation.io.readers import read_shard
    from curation.io.sources import list_shards
    from curation.job import run_stages
    from curation.lab.synth import generate
    from curation.models.clip import model_info
    from curation.plan import StagePlan

    def score(seed: int, rows: int, shard_size: int, columns: tuple[str, ...]):
        root = tmp_path_factory.mktemp(f"unseen-{seed}")
        truth = generate(str(root), rows=rows, seed=seed, fmt="parquet", shard_size=shard_size)
        cfg = load_config("pipelines/demo.yaml", ["model.threads=2"])
        plan = StagePlan.build(cfg, model_info(cfg.model))
        values: list[list] = [[] for _ in columns]
        for shard in list_shards(str(root), "auto"):
            table = run_stages([*plan.cpu, plan.embed, *plan.post], read_shard(shard))
            for out, column in zip(values, columns):
                out.extend(table.column(column).to_pylist())
        return truth, values

    return score


# ---- object store: moto's S3 server behind a fault-injecting loopback proxy -----------------------
#
# Ray workers inherit the environment of the process that starts Ray, so the endpoint is fixed here,
# at import, before any test starts Ray. The servers themselves start only when a test asks for them.

import http.client  # noqa: E402
import http.server  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MOTO_PORT, PROXY_PORT = _free_port(), _free_port()
os.environ.update(
    AWS_ENDPOINT_URL=f"http://127.0.0.1:{PROXY_PORT}",
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
)

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class FaultProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to moto; answers a seeded fraction with 503 SlowDown instead."""

    daemon_threads = True

    def __init__(self, port: int, upstream_port: int):
        super().__init__(("127.0.0.1", port), _ProxyHandler)
        self.upstream_port = upstream_port
        self.fault_rate = 0.0
        self.rng = random.Random(0)
        self.lock = threading.Lock()
        self.requests = 0
        self.faults = 0
        self.log: list[tuple[str, str]] = []  # (method, path and query) of every request
        self.in_flight = 0
        self.peak_in_flight = 0  # most requests in progress at once (reset it to measure)

    def should_fail(self) -> bool:
        with self.lock:
            self.requests += 1
            fail = self.rng.random() < self.fault_rate
            self.faults += fail
            return fail


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def _forward(self):
        with self.server.lock:
            self.server.log.append((self.command, self.path))
            self.server.in_flight += 1
            self.server.peak_in_flight = max(self.server.peak_in_flight, self.server.in_flight)
        try:
            self._relay()
        finally:
            with self.server.lock:
                self.server.in_flight -= 1

    def _relay(self):
        body = self._read_body()
        if self.server.should_fail():
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(SLOW_DOWN)))
            self.end_headers()
            self.wfile.write(SLOW_DOWN)
            return
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        dropped = ("connection", "transfer-encoding", "content-length", "expect")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        payload = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        length = response.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        upstream.close()

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


@pytest.fixture(scope="session")
def s3_proxy():
    """moto's S3 server on 127.0.0.1 behind FaultProxy; both stopped at the end of the session."""
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=MOTO_PORT, verbose=False)
    moto.start()
    proxy = FaultProxy(PROXY_PORT, MOTO_PORT)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()
    moto.stop()


@pytest.fixture
def s3_bucket(s3_proxy):
    """A fresh, empty bucket; yields its name."""
    import fsspec

    s3_proxy.fault_rate = 0.0
    name = f"bucket-{random.Random().randrange(10**9)}"
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir(name)
    yield name
    s3_proxy.fault_rate = 0.0
