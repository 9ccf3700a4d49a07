"""Operator mistakes (issue 30, items 4-8 and 13-17), through `curate` as a subprocess.

Each mistake either stops the command with one line naming the fix (exit 2, no traceback, nothing written
where it is found before the job writes), or the job completes with input = kept + rejected. No URL's
credentials and no raw personal data reach the output, the report or the terminal; a healthy job prints no
error-level line. Most cases fail before Ray starts; three jobs run on Ray (two complete, one fills a disk).
"""

from __future__ import annotations

import argparse
import base64
import functools
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "pipelines/demo.yaml"
SETTINGS = ["--set", "model.threads=1"]
PASSWORD = "s3cr3t-pw"  # in URLs given to curate: it must never be written or printed
# Raw personal data in captions: none of it may reach any output file, the report or the terminal.
PII = ("bob.smith@example.com", "jane.doe@example.org", "555-123-4567", "ann@example.net")
# An error-level line from Python's logging (Ray Data's included) or from Ray's C++ core ("[... E pid tid]").
ERROR_LINE = re.compile(r"\bERROR\b|^\[[^\]]* E \d+ \d+\]|Traceback", re.MULTILINE)


def curate(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120):
    environment = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    environment.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "curation.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,  # a hang fails the test instead of the suite
        env=environment,
        cwd=cwd,
    )


def one_line(done: subprocess.CompletedProcess) -> str:
    """The one error line a refused command prints (exit 2, nothing else on stderr, no traceback)."""
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), output[-3000:]
    assert PASSWORD not in output
    return lines[0]


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def picture(seed: int) -> bytes:
    """A 128 x 128 PNG of noise: ~50 KB that no codec shrinks (what fills a small disk in the write phase)."""
    import random

    pixels = random.Random(seed).randbytes(128 * 128 * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (128, 128), pixels).save(out, "PNG")
    return out.getvalue()


# ---- the shared input worlds ------------------------------------------------------------------------

# (member stem, caption or None for no caption file, has an image): a webdataset shard whose reader rejects
# rows before the caption stage (a duplicate key, a missing image), with personal data in their captions.
TAR_ROWS = [
    ("a", "a red square on a white background", True),
    ("b", "three green circles on a black background", True),
    ("c", "write to bob.smith@example.com about this blue star", True),
    ("c", "a second sample named c, call 555-123-4567", True),  # duplicate_key, before the caption stage
    ("d", "mail jane.doe@example.org for a yellow triangle", False),  # missing_image, before the caption stage
    ("e", "two pink crosses on grey, contact ann@example.net", True),  # kept, with its caption redacted
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """One webdataset shard of TAR_ROWS (6 input rows)."""
    root = tmp_path_factory.mktemp("mistakes-world")
    with tarfile.open(root / "00000.tar", "w") as tar:
        for i, (stem, caption, has_image) in enumerate(TAR_ROWS):
            members = [(f"{stem}.txt", caption.encode())] if caption else []
            members += [(f"{stem}.png", picture(i))] if has_image else []
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return root


class _AuthHandler(SimpleHTTPRequestHandler):
    """Serves a folder; its URL lists (*.csv) only with HTTP basic auth user:PASSWORD."""

    def log_message(self, *args):
        pass

    def _allowed(self) -> bool:
        if not self.path.split("?")[0].endswith(".csv"):
            return True
        if self.headers.get("Authorization") == "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode():
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="lists"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_GET(self):
        if self._allowed():
            super().do_GET()

    def do_HEAD(self):
        if self._allowed():
            super().do_HEAD()


@pytest.fixture(scope="module")
def url_list(tmp_path_factory):
    """A URL list behind basic auth on a loopback server, its images beside it (one missing); yields the
    list's URL with the credentials in it, and its number of rows."""
    root = tmp_path_factory.mktemp("mistakes-http")
    (root / "img").mkdir()
    rows = [
        ("k1", "img/1.png", "a red square on a white background"),
        ("k2", "img/2.png", "call me at 555-123-4567 for this blue circle"),  # caption_pii
        ("k2", "img/3.png", "write to bob.smith@example.com about the green star"),  # duplicate_key, first
        ("k4", "img/404.png", "a yellow triangle on a purple background"),  # http_404
        ("k5", "img/5.png", "three green circles, ask jane.doe@example.org"),  # caption_pii
    ]
    for i in (1, 2, 3, 5):
        (root / "img" / f"{i}.png").write_bytes(picture(i))
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_AuthHandler, directory=str(root)))
    server.daemon_threads = True
    port = server.server_address[1]
    # One image URL is signed (a secret in its query): the download uses it, nothing stored may hold it.
    signed = {"img/5.png": f"img/5.png?X-Amz-Signature={PASSWORD}"}
    lines = ["key,url,caption"] + [
        f'{k},http://127.0.0.1:{port}/{signed.get(path, path)},"{caption}"' for k, path, caption in rows
    ]
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://user:{PASSWORD}@127.0.0.1:{port}/list.csv", len(rows)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Files that are no weights the loaders accept."""
    import torch

    root = tmp_path_factory.mktemp("mistakes-weights")
    torch.save({"args": argparse.Namespace(lr=1), "state_dict": {"w": torch.zeros(2)}}, root / "pickle.pt")
    torch.save([1, 2, 3], root / "list.pt")
    (root / "text.safetensors").write_text("these are not the weights you are looking for\n" * 20)
    (root / "garbage.safetensors").write_bytes(bytes(range(256)) * 8)
    (root / "notes.txt").write_text("model notes\n")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1000)}, str(root / "whole.safetensors"))
    (root / "cut.safetensors").write_bytes((root / "whole.safetensors").read_bytes()[:-100])
    return root


@pytest.fixture(scope="module")
def can_mount(tmp_path_factory) -> bool:
    """Whether this machine lets a test mount a small tmpfs in a private mount namespace (for a full and a
    read-only file system)."""
    where = tmp_path_factory.mktemp("mount-probe")
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {where}"], capture_output=True
    )
    return probe.returncode == 0


def in_small_fs(mount: Path, options: str, command: list[str], after: str = "") -> subprocess.CompletedProcess:
    """Run `command` (then the shell line `after`) with a tmpfs mounted at `mount`, in a private mount
    namespace: the file system exists for that process only."""
    mount.mkdir(parents=True, exist_ok=True)
    quoted = " ".join(f"'{arg}'" for arg in command)
    script = f"mount -t tmpfs -o {options} tmpfs '{mount}' && {quoted}; echo \"rc=$?\" >&3; {after}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)
    # fd 3 carries the command's exit status apart from its output
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", f"exec 3>&1; {script}"], capture_output=True, text=True, env=env, timeout=300
    )


# ---- mistakes found before anything is written --------------------------------------------------------


def _run(input_url: str, output: str, *more: str) -> list[str]:
    return ["run", str(DEMO), "--input", input_url, "--output", output, *SETTINGS, *more]


def _a_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a directory\n")


def _success_only(out: Path, manifest: str | None = None) -> None:
    out.mkdir(parents=True)
    (out / "_SUCCESS").write_bytes(b"")
    if manifest is not None:
        (out / "_manifest.json").write_text(manifest)


def _job_json(out: Path, text: str) -> None:
    (out / "_work").mkdir(parents=True)
    (out / "_work" / "job.json").write_text(text)


def _pretrained(name: str):
    return lambda c: _run(str(c.world), str(c.out), "--set", f"model.pretrained={c.weights / name}")


class Case:
    """One mistake: the command (from the case's folder, its shared input world and weights files), what
    to set up first, words the error line must hold, and a path the command must not have written."""

    def __init__(self, args, words, *, setup=None, absent=None):
        self.args, self.words, self.setup, self.absent = args, words, setup, absent

    def bind(self, root: Path, world: Path, weights: Path) -> "Case":
        self.root, self.world, self.weights, self.out = root, world, weights, root / "out"
        return self


CASES = {
    # item 4: the output inside the input, or the input itself (and an input inside what the run writes)
    "output inside input": Case(
        lambda c: _run(str(c.world), str(c.world / "curated")), ["inside --input"], absent=lambda c: c.world / "curated"
    ),
    "output is input": Case(
        lambda c: _run(str(c.world), str(c.world)), ["is --input"], absent=lambda c: c.world / "_work"
    ),
    "input in output's kept/": Case(
        lambda c: _run(str(c.out / "kept"), str(c.out)),
        ["lies in what the run writes"],
        setup=lambda c: shutil.copytree(c.world, c.out / "kept"),
        absent=lambda c: c.out / "_work",
    ),
    # item 6: fsspec URL chaining; an output that is a file (or under one)
    "'::' in output": Case(lambda c: _run(str(c.world), "a::b"), ["'::'"], absent=lambda c: c.root / "a:"),
    "output is a file": Case(
        lambda c: _run(str(c.world), str(c.root / "f")), ["is a file"], setup=lambda c: _a_file(c.root / "f")
    ),
    "output under a file": Case(
        lambda c: _run(str(c.world), str(c.root / "g" / "out")),
        ["is a file, not a directory"],
        setup=lambda c: _a_file(c.root / "g"),
    ),
    # item 7: credentials in a URL are never printed (the run tests below: never written either)
    "credentials in an unreachable http input": Case(
        lambda c: _run(f"http://user:{PASSWORD}@127.0.0.1:{free_port()}/list.csv", str(c.out)),
        ["127.0.0.1"],
        absent=lambda c: c.out,
    ),
    # item 13: weights files checked before Ray starts
    "pickle .pt": Case(_pretrained("pickle.pt"), ["runs code to load", "argparse.Namespace"], absent=lambda c: c.out),
    "list .pt": Case(_pretrained("list.pt"), ["no state dict of tensors"], absent=lambda c: c.out),
    "text .safetensors": Case(
        _pretrained("text.safetensors"), ["not a valid safetensors file"], absent=lambda c: c.out
    ),
    "garbage .safetensors": Case(
        _pretrained("garbage.safetensors"), ["not a valid safetensors"], absent=lambda c: c.out
    ),
    "cut .safetensors": Case(_pretrained("cut.safetensors"), ["not a valid safetensors file"], absent=lambda c: c.out),
    "not weights at all": Case(_pretrained("notes.txt"), ["not a weights file"], absent=lambda c: c.out),
    "head weights not weights": Case(
        lambda c: _run(
            str(c.world),
            str(c.out),
            "--set",
            f"heads=[{{name: unsafe, weights: {c.weights / 'text.safetensors'}, threshold: 0.5}}]",
        ),
        ["heads[unsafe].weights", "not a valid safetensors file"],
        absent=lambda c: c.out,
    ),
    # item 14: clusters that do not answer, and credentials Ray would not take
    "unreachable cluster": Case(
        lambda c: _run(str(c.world), str(c.out), "--address", f"127.0.0.1:{free_port()}"),
        ["cannot reach Ray cluster"],
        absent=lambda c: c.out,
    ),
    "unreachable ray:// cluster": Case(
        lambda c: _run(str(c.world), str(c.out), "--address", f"ray://127.0.0.1:{free_port()}"),
        ["cannot reach Ray cluster"],
        absent=lambda c: c.out,
    ),
    "credentials in ray://": Case(
        lambda c: _run(str(c.world), str(c.out), "--address", f"ray://user:{PASSWORD}@127.0.0.1:10001"),
        ["user name or password"],
        absent=lambda c: c.out,
    ),
    # item 15: damaged files of an earlier run, a config that is not UTF-8, synth to an unwritable place
    "config not UTF-8": Case(
        lambda c: ["run", str(c.root / "latin1.yaml"), "--input", str(c.world), "--output", str(c.out)],
        ["not UTF-8", "save it as UTF-8"],
        setup=lambda c: (c.root / "latin1.yaml").write_bytes("model:\n  arch: caf\xe9\n".encode("latin-1")),
        absent=lambda c: c.out,
    ),
    "_SUCCESS, no manifest": Case(
        lambda c: _run(str(c.world), str(c.out)),
        ["no readable _manifest.json"],
        setup=lambda c: _success_only(c.out),
        absent=lambda c: c.out / "_work",
    ),
    "manifest not JSON": Case(
        lambda c: _run(str(c.world), str(c.out)),
        ["_manifest.json"],
        setup=lambda c: _success_only(c.out, '{"funnel": '),
        absent=lambda c: c.out / "_work",
    ),
    "manifest lacks keys": Case(
        lambda c: _run(str(c.world), str(c.out)),
        ["_manifest.json"],
        setup=lambda c: _success_only(c.out, '{"inputs": [], "config_digest": "x"}'),
        absent=lambda c: c.out / "_work",
    ),
    "job.json not JSON": Case(
        lambda c: _run(str(c.world), str(c.out)),
        ["job.json", "delete"],
        setup=lambda c: _job_json(c.out, "[1, 2"),
        absent=lambda c: c.out / "kept",
    ),
    "job.json lacks keys": Case(
        lambda c: _run(str(c.world), str(c.out)),
        ["delete that directory"],
        setup=lambda c: _job_json(c.out, '{"inputs": []}'),
        absent=lambda c: c.out / "kept",
    ),
    "synth into a file's folder": Case(
        lambda c: ["synth", "--output", str(c.root / "h" / "w"), "--rows", "4"],
        ["not a directory"],
        setup=lambda c: _a_file(c.root / "h"),
    ),
}


@pytest.fixture(scope="module")
def refused(world, weights, tmp_path_factory):
    """Every case of CASES run once, a few at a time (each is a Python start-up and a second of checks):
    name -> (case, finished process, seconds)."""
    from concurrent.futures import ThreadPoolExecutor

    def run(name: str):
        case = CASES[name].bind(tmp_path_factory.mktemp("case"), world, weights)
        if case.setup is not None:
            case.setup(case)
        started = time.monotonic()
        done = curate(*case.args(case), cwd=case.root, timeout=90)
        return name, (case, done, time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=max(2, min(6, (os.cpu_count() or 2) + 1))) as pool:
        return dict(pool.map(run, CASES))


@pytest.mark.parametrize("name", list(CASES))
def test_mistake_is_one_line_before_anything_is_written(refused, world, name):
    case, done, seconds = refused[name]
    line = one_line(done)
    assert all(word in line for word in case.words), (case.words, line)
    assert seconds < 60, f"took {seconds:.0f} s"
    if case.absent is not None:
        assert not case.absent(case).exists(), f"{case.absent(case)} was written"
    assert sorted(p.name for p in world.iterdir()) == ["00000.tar"]  # the shared input stays untouched


NO_AWS = {
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:1",  # nothing is ever sent anywhere
}


@pytest.mark.parametrize("where", ["--input", "--output"])
def test_s3_without_credentials_is_one_line(world, tmp_path, where):
    args = ("s3://bucket/in", str(tmp_path / "out")) if where == "--input" else (str(world), "s3://bucket/out")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run(
        [sys.executable, "-m", "curation.cli", *_run(*args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, **NO_AWS, "PYTHONPATH": str(REPO)},
    )
    assert "no credentials" in one_line(done)


def test_read_only_output_is_one_line(world, tmp_path, can_mount):
    if not can_mount:
        pytest.skip("no private mount namespace here (unshare -m)")
    mount = tmp_path / "ro"
    for command in (
        [sys.executable, "-m", "curation.cli", *_run(str(world), str(mount / "out"))],
        [sys.executable, "-m", "curation.cli", "synth", "--output", str(mount / "w"), "--rows", "4"],
    ):
        done = in_small_fs(mount, "ro,size=64k", command)
        assert "rc=2" in done.stdout and "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
        assert "read-only file system" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


# ---- jobs that complete -------------------------------------------------------------------------------


def output_strings(output: Path) -> str:
    """Every text the output holds: its JSON and HTML files, and every string value of its Parquet files
    (compressed on disk: a byte search would not see them)."""
    parts = []
    for path in sorted(output.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            for column in table.itercolumns():
                if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                    parts += [v for v in column.to_pylist() if v]
        else:
            parts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(parts)


def kept_and_rejected(output: Path) -> list[str]:
    keys = []
    for status in ("kept", "rejected"):
        if (output / status).exists():
            keys += pads.dataset(str(output / status)).to_table(columns=["key"]).column("key").to_pylist()
    return keys


def plant_stale_files(output: Path) -> list[str]:
    """What a run of other inputs left (its _work/ deleted) and a killed write's temporary file."""
    old = pa.table({"key": ["old/1", "old/2"], "caption": ["from another run", "also"]})
    for name in ("kept/part-99999.parquet", "rejected/part-99999.parquet"):
        (output / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(old, output / name)
    (output / "kept" / ".tmp-0123abcd-part-list.parquet").write_bytes(b"half a file")
    (output / "_work" / "scored").mkdir(parents=True, exist_ok=True)
    (output / "_work" / "scored" / ".tmp-4567ef01-00000.parquet").write_bytes(b"half a file")
    return sorted(["kept/part-99999.parquet", "rejected/part-99999.parquet", "kept/.tmp-0123abcd-part-list.parquet"])


@pytest.mark.ray
def test_job_from_a_url_list_behind_basic_auth(url_list, tmp_path):
    """Items 5, 7, 8 (pii: reject), 16, 17: an http input with credentials is read (not http://http://),
    the password is written nowhere and printed nowhere, stale files of another run and temporaries are
    removed (and listed), rejected captions are redacted in the output and the report, and the healthy
    run prints no error-level line."""
    url, rows = url_list
    output = tmp_path / "out"
    stale = plant_stale_files(output)
    done = curate(
        *_run(url, str(output)),
        "--set",
        "caption.pii=reject",
        "--set",
        "download.allow_private_addresses=true",
        timeout=400,
    )
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed[-3000:]
    assert not ERROR_LINE.search(printed), printed[-3000:]
    assert len(kept_and_rejected(output)) == rows  # input = kept + rejected, the stale rows gone
    manifest = json.loads((output / "_manifest.json").read_text())
    assert manifest["funnel"]["input"] == rows
    assert manifest["removed"] == stale
    assert not list(output.rglob(".tmp-*"))
    [shard] = pq.read_table(output / manifest["shards_file"]["name"]).to_pylist()
    assert shard["url"] == url.replace(f"user:{PASSWORD}@", "")
    everything = output_strings(output) + printed
    assert PASSWORD not in everything
    assert not [p for p in PII if p in everything]
    reasons = manifest["funnel"]["rejected_by_reason"]
    assert reasons["caption_pii"] == 2 and reasons["duplicate_key"] == 1 and reasons["http_404"] == 1
    report = (output / "report.html").read_text()
    assert "[EMAIL]" in report or "[PHONE]" in report  # the samples show redacted captions


@pytest.mark.ray
def test_job_with_rows_rejected_before_the_caption_stage(world, tmp_path):
    """Item 8 (pii: redact): a duplicate key's and a missing image's captions are redacted in rejected/."""
    output = tmp_path / "out"
    done = curate(*_run(str(world), str(output)), timeout=400)
    printed = done.stdout + done.stderr
    assert done.returncode == 0 and not ERROR_LINE.search(printed), printed[-3000:]
    assert len(kept_and_rejected(output)) == len(TAR_ROWS)
    rejected = pads.dataset(str(output / "rejected")).to_table().to_pylist()
    by_reason = {row["reject_reason"]: row for row in rejected}
    assert by_reason["duplicate_key"]["caption"] == "a second sample named c, call [PHONE]"
    assert by_reason["missing_image"]["caption"] == "mail [EMAIL] for a yellow triangle"
    assert not [p for p in PII if p in output_strings(output) + printed]


@pytest.mark.ray
def test_full_disk_is_one_line_and_leaves_no_temporary_file(world, tmp_path, can_mount):
    """Item 15 (ENOSPC) and 16: a disk that fills during the job is one line, not a Ray traceback, and the
    failed write leaves no temporary file behind."""
    if not can_mount:
        pytest.skip("no private mount namespace here (unshare -m)")
    mount = tmp_path / "small"
    # room for the work files, not for the final ones (they carry the ~50 KB images: the rejected ones too)
    more = ("--set", "output.rejected_images=true")
    command = [sys.executable, "-m", "curation.cli", *_run(str(world), str(mount / "out"), *more)]
    done = in_small_fs(mount, "size=128k", command, after=f"find '{mount}' -name '.tmp-*' | sed 's/^/left: /'")
    assert "rc=2" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "no space left" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "left: " not in done.stdout, done.stdout


# ---- the helpers, case by case --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, stored",
    [
        ("http://user:pw@host/list.csv", "http://host/list.csv"),
        ("ray://user:p@ss@head:10001", "ray://head:10001"),  # a raw '@' in the password
        (
            "s3://b/k?X-Amz-Signature=abc&X-Amz-Credential=AKIA%2Fx&part=1",
            "s3://b/k?X-Amz-Signature=***&X-Amz-Credential=***&part=1",
        ),
        ("https://h/a.jpg?token=t1&sig=s2#top", "https://h/a.jpg?token=***&sig=***#top"),
        ("cannot open http://u:p@h:1/x (refused); check --input", "cannot open http://h:1/x (refused); check --input"),
        ("/data/raw/00000.tar", "/data/raw/00000.tar"),
        ("model.batch_size=64", "model.batch_size=64"),
    ],
)
def test_credentials_are_stripped_from_urls_and_sentences(text, stored):
    from curation.io.urls import strip_credentials, strip_credentials_in

    assert strip_credentials(text) == stored
    assert strip_credentials_in({"a": [text, 1, None], text: True}) == {"a": [stored, 1, None], stored: True}


@pytest.mark.parametrize("fails", ["write", "rename"])
def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch, fails):
    import errno

    from curation.io.commit import Location

    location = Location.of(str(tmp_path / "out"))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if fails == "rename":
        monkeypatch.setattr(location.fs, "mv", full)
    else:
        real_open = location.fs.open

        def open_then_fill(path, mode="rb", **kwargs):
            handle = real_open(path, mode, **kwargs)
            if "w" in mode:
                handle.write = full
            return handle

        monkeypatch.setattr(location.fs, "open", open_then_fill)
    with pytest.raises(OSError):
        location.write_bytes(b"x" * 100, "kept", "part-00000.parquet")
    assert [p.name for p in (tmp_path / "out" / "kept").iterdir()] == []


def test_a_run_removes_what_earlier_attempts_left(tmp_path):
    from curation.io.commit import Location
    from curation.io.sources import Shard
    from curation.job import JobPaths, remove_stale_outputs

    out = tmp_path / "out"
    planted = plant_stale_files(out)
    for status in ("kept", "rejected"):
        (out / status / "part-00000.parquet").write_bytes(b"this job's file")
    paths = JobPaths(output_url=str(out), work_url=str(out / "_work"))
    shards = [Shard(shard_id="00000", url="/in/00000.tar", format="webdataset")]
    assert remove_stale_outputs(paths, shards) == planted
    assert Location.of(str(out)).remove_temporaries() == ["_work/scored/.tmp-4567ef01-00000.parquet"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "kept/part-00000.parquet",
        "rejected/part-00000.parquet",
    ]


@pytest.mark.parametrize(
    "error, words",
    [
        (OSError(28, "No space left on device"), "no space left"),
        (OSError(30, "Read-only file system"), "read-only file system"),
        (PermissionError(13, "Permission denied"), "access denied"),
        (RuntimeError("ray::MapBatches(write)\n  ...\nOSError: [Errno 28] No space left on device\n"), "no space left"),
        (RuntimeError("...\nbotocore.exceptions.NoCredentialsError: Unable to locate credentials"), "no credentials"),
        (RuntimeError("wrapped"), None),
    ],
)
def test_storage_errors_an_operator_fixes_are_one_line(error, words):
    """Also when a Ray task hands the error back only as the text of its traceback."""
    from curation.io.storage import storage_problem_in

    if isinstance(error, RuntimeError) and words is None:
        error.__cause__ = ValueError("not a storage error")
    problem = storage_problem_in(error, "s3://bucket/out")
    assert (problem is None) if words is None else (words in str(problem) and "\n" not in str(problem))
