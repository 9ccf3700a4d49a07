"""URL downloads against a loopback HTTP server started per test on 127.0.0.1 and stopped in teardown."""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curation.config import DownloadConfig
from curation.io.download import backoff_delay, check_url, download_many, opted_out, retry_after_seconds
from curation.io.readers import read_shard
from curation.io.sources import list_shards
from curation.schema import RejectReason
from curation.stages.decode import DecodeStage
from curation.stages.download import DownloadStage

FAST = DownloadConfig(
    timeout_s=0.5,
    retries=2,
    backoff_s=0.01,
    max_wait_s=2.0,
    max_bytes=1 << 20,
    concurrency=8,
    allow_private_addresses=True,
)


def jpeg(seed: int, size=(64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler thread: nothing outlives the test
    block_on_close = True
    request_queue_size = 128  # the default 5 drops connections under the client's concurrency

    def handle_error(self, request, client_address):  # clients hang up on purpose (too_large, timeout)
        pass


class _Handler(BaseHTTPRequestHandler):
    timeout = 5  # a blocked write gives up: a handler never hangs teardown
    server: _Server

    def log_message(self, *args):
        pass

    def do_GET(self):
        state = self.server.state
        with state["lock"]:
            state["hits"][self.path] = state["hits"].get(self.path, 0) + 1
            hit = state["hits"][self.path]
            state["inflight"] += 1
            state["max_inflight"] = max(state["max_inflight"], state["inflight"])
        try:
            self._route(self.path, hit, state["stop"])
        finally:
            with state["lock"]:
                state["inflight"] -= 1

    def _route(self, path: str, hit: int, stop: threading.Event):
        parts = path.strip("/").split("/")
        head = parts[0]
        if head == "img":
            return self._send(200, jpeg(int(parts[1].split(".")[0])), "image/jpeg")
        if head == "hold":  # an image after a short delay (concurrency measurement)
            stop.wait(0.15)
            return self._send(200, jpeg(int(parts[1])), "image/jpeg")
        if head == "missing":
            return self._send(404, b"not here", "text/plain")
        if head in ("forbidden", "gone"):
            return self._send(403 if head == "forbidden" else 410, b"no", "text/plain")
        if head == "throttle":  # /throttle/<n>/<id>: n times 429, then the image
            if hit <= int(parts[1]):
                return self._send(429, b"slow down", "text/plain", {"Retry-After": parts[3] if len(parts) > 3 else "0"})
            return self._send(200, jpeg(int(parts[2])), "image/jpeg")
        if head == "flaky":  # /flaky/<n>/<id>: n times 500, then the image
            if hit <= int(parts[1]):
                return self._send(500, b"oops", "text/plain")
            return self._send(200, jpeg(int(parts[2])), "image/jpeg")
        if head == "reset":  # /reset/<n>/<id>: n times a TCP reset, then the image
            if hit <= int(parts[1]):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                return None
            return self._send(200, jpeg(int(parts[2])), "image/jpeg")
        if head == "always500":
            return self._send(503, b"down", "text/plain")
        if head == "always429":
            return self._send(429, b"slow down", "text/plain", {"Retry-After": "0"})
        if head == "slow":
            stop.wait(3)  # ended early by teardown
            return self._send(200, jpeg(1), "image/jpeg")
        if head == "big":  # announces its size
            return self._send(200, b"\xff" * (3 << 20), "image/jpeg")
        if head == "big-stream":  # no Content-Length: the client must count
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            for _ in range(48):
                self.wfile.write(b"\xff" * (64 << 10))
            return None
        if head == "html":
            return self._send(200, b"<!doctype html><html><body>an image was here</body></html>", "text/html")
        if head == "empty":
            return self._send(200, b"", "image/jpeg")
        if head == "noai":
            return self._send(200, jpeg(5), "image/jpeg", {"X-Robots-Tag": "noindex, noai"})
        if head == "noai-other-agent":
            return self._send(200, jpeg(6), "image/jpeg", {"X-Robots-Tag": "otherbot: noai"})
        if head == "redirect":
            return self._send(302, b"", "text/plain", {"Location": "/img/7.jpg"})
        if head == "redirect-loop":
            return self._send(302, b"", "text/plain", {"Location": "/redirect-loop"})
        if head == "redirect-file":
            return self._send(302, b"", "text/plain", {"Location": "file:///etc/passwd"})
        if head == "redirect-nowhere":
            return self._send(302, b"", "text/plain")
        return self._send(404, b"", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    """A loopback HTTP server for one test: yields (base URL, state); stopped and joined in teardown."""
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.state = {"lock": threading.Lock(), "hits": {}, "inflight": 0, "max_inflight": 0, "stop": threading.Event()}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.state
    finally:
        httpd.state["stop"].set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()


def reasons(results):
    return [r.reason.value if r.reason else None for r in results]


def test_each_url_gets_its_image_or_its_reason(server):
    base, state = server
    cases = {
        f"{base}/img/1.jpg": None,
        f"{base}/missing": "http_404",
        f"{base}/forbidden": "http_4xx",
        f"{base}/gone": "http_4xx",
        f"{base}/throttle/2/2": None,  # 429 twice, then 200: within 2 retries
        f"{base}/flaky/1/3": None,  # 500 once, then 200
        f"{base}/reset/1/4": None,  # connection reset once, then 200
        f"{base}/always500": "http_5xx",
        f"{base}/always429": "http_429",
        f"{base}/slow": "timeout",
        f"{base}/big": "too_large",
        f"{base}/big-stream": "too_large",
        f"{base}/html": None,  # fetched; decode says not_an_image
        f"{base}/empty": None,  # fetched; decode says empty_image
        f"{base}/noai": "opted_out",
        f"{base}/noai-other-agent": None,
        f"{base}/redirect": None,
        f"{base}/redirect-loop": "too_many_redirects",
        f"{base}/redirect-file": "invalid_url",
        f"{base}/redirect-nowhere": "http_3xx",
        "file:///etc/passwd": "invalid_url",
        "ftp://127.0.0.1/x.jpg": "invalid_url",
        None: "invalid_url",
    }
    started = time.monotonic()
    results = download_many(list(cases), FAST)
    assert reasons(results) == list(cases.values())
    assert time.monotonic() - started < 8
    by_url = dict(zip(cases, results))
    assert by_url[f"{base}/img/1.jpg"].data == jpeg(1)
    assert by_url[f"{base}/throttle/2/2"].data == jpeg(2) and by_url[f"{base}/throttle/2/2"].attempts == 3
    assert by_url[f"{base}/flaky/1/3"].data == jpeg(3)
    assert by_url[f"{base}/reset/1/4"].data == jpeg(4)
    assert by_url[f"{base}/redirect"].data == jpeg(7)
    assert by_url[f"{base}/html"].data.startswith(b"<!doctype html>")
    assert by_url[f"{base}/empty"].data == b""
    # Bounded retries: 1 + retries attempts, no more; permanent failures are not retried.
    assert state["hits"]["/always500"] == 3 and state["hits"]["/always429"] == 3
    assert state["hits"]["/slow"] == 3
    assert state["hits"]["/missing"] == 1 and state["hits"]["/big"] == 1


def test_retry_after_is_honoured(server):
    base, state = server
    started = time.monotonic()
    [result] = download_many([f"{base}/throttle/1/9/1"], FAST)  # one 429 with Retry-After: 1
    assert result.reason is None and result.data == jpeg(9)
    assert time.monotonic() - started >= 1.0
    assert state["hits"]["/throttle/1/9/1"] == 2


def test_retry_after_is_capped(server):
    base, _ = server
    config = FAST.model_copy(update={"max_wait_s": 0.2})
    started = time.monotonic()
    [result] = download_many([f"{base}/throttle/1/9/3600"], config)  # asks for an hour
    assert result.reason is None
    assert time.monotonic() - started < 2


def test_concurrency_is_bounded(server):
    base, state = server
    config = FAST.model_copy(update={"concurrency": 3})
    results = download_many([f"{base}/hold/{i}" for i in range(12)], config)
    assert reasons(results) == [None] * 12
    assert state["max_inflight"] <= 3


def test_private_and_loopback_hosts_are_blocked_by_default(server):
    base, state = server
    port = base.rsplit(":", 1)[1]
    urls = [
        f"{base}/img/1.jpg",
        f"http://localhost:{port}/img/1.jpg",  # a name resolving to loopback
        f"http://[::1]:{port}/img/1.jpg",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://10.0.0.1/x.jpg",
        "http://[::ffff:127.0.0.1]/x.jpg",
    ]
    results = download_many(urls, FAST.model_copy(update={"allow_private_addresses": False}))
    assert reasons(results) == ["blocked_address"] * len(urls)
    assert state["hits"] == {}


def test_runs_inside_a_running_event_loop(server):
    base, _ = server

    async def caller():
        return download_many([f"{base}/img/2.jpg"], FAST)

    [result] = asyncio.run(caller())
    assert result.data == jpeg(2)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.jpg",
        "data:image/png;base64,AAAA",
        "javascript:alert(1)",
        "",
        "not a url",
        "http://",
        "//example.com/a.jpg",
        42,
        "http://" + "a" * 9000 + ".com/",
    ],
)
def test_only_http_urls_are_fetchable(url):
    assert check_url(url) is RejectReason.INVALID_URL


def test_public_urls_pass_the_check():
    assert check_url("https://example.com/a.jpg") is None
    assert check_url("http://93.184.216.34/a.jpg") is None
    assert check_url("http://127.0.0.1/a.jpg") is RejectReason.BLOCKED_ADDRESS
    assert check_url("http://127.0.0.1/a.jpg", allow_private=True) is None


def test_retry_after_parsing():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    assert (
        retry_after_seconds("soon") is None and retry_after_seconds(None) is None and retry_after_seconds("nan") is None
    )


def test_backoff_doubles_with_jitter_and_is_capped():
    config = DownloadConfig(backoff_s=1.0, max_wait_s=5.0)
    for retry, base in [(1, 1.0), (2, 2.0), (3, 4.0)]:
        delays = [backoff_delay(retry, None, config) for _ in range(50)]
        assert all(min(0.5 * base, 5.0) <= d <= min(1.5 * base, 5.0) for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert backoff_delay(10, None, config) == 5.0
    assert backoff_delay(1, 3.0, config) == 3.0  # Retry-After wins when longer
    assert backoff_delay(1, 999.0, config) == 5.0


def test_opt_out_header():
    from multidict import CIMultiDict

    assert opted_out(CIMultiDict([("X-Robots-Tag", "noai")]), "curation")
    assert opted_out(CIMultiDict([("X-Robots-Tag", "all"), ("X-Robots-Tag", "curation: noimageai")]), "curation")
    assert not opted_out(CIMultiDict([("X-Robots-Tag", "otherbot: noai")]), "curation")
    assert not opted_out(CIMultiDict([("X-Robots-Tag", "nofollow")]), "curation")


def test_download_stage_on_a_url_list_shard(server, tmp_path):
    base, state = server
    lines = [
        "key,url,caption",
        f"000,{base}/img/11.jpg,a photo of a red square",
        f"001,{base}/missing,a photo that is gone",
        f"002,{base}/html,a page pretending to be a photo",
        f"003,{base}/flaky/1/12,a photo behind a flaky server",
        f"004,{base}/img/13.jpg,",  # empty caption: rejected by the reader, never fetched
        "005,file:///etc/passwd,a file on the worker",
    ]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    [shard] = list_shards(str(tmp_path))
    assert shard.format == "urls"
    raw = read_shard(shard)
    assert raw.column("image").null_count == raw.num_rows
    assert raw.column("status").to_pylist() == ["kept"] * 4 + ["rejected", "kept"]  # 004 has no caption

    table = DownloadStage(download=FAST).process_batch(raw)
    table = DecodeStage(image_size=32).process_batch(table)
    got = {
        k: (s, r, st)
        for k, s, r, st in zip(
            *(table.column(c).to_pylist() for c in ("key", "status", "reject_reason", "reject_stage"))
        )
    }
    assert got == {
        "list/000": ("kept", None, None),
        "list/001": ("rejected", "http_404", "download"),
        "list/002": ("rejected", "not_an_image", "decode"),
        "list/003": ("kept", None, None),
        "list/004": ("rejected", "missing_caption", "read"),
        "list/005": ("rejected", "invalid_url", "download"),
    }
    assert table.column("width").to_pylist()[0] == 64
    assert "/img/13.jpg" not in state["hits"]


def test_download_stage_leaves_byte_shards_alone():
    table = pa.table(
        {
            "key": ["s/a", "s/b"],
            "source": ["s", "s"],
            "url": ["http://127.0.0.1:9/a", None],
            "caption": ["x", "y"],
            "image": [b"bytes", None],
            "status": ["kept", "rejected"],
            "reject_reason": [None, "missing_image"],
            "reject_stage": [None, "read"],
        }
    )
    assert DownloadStage(download=FAST).process_batch(table).equals(table)
