"""Allocator settings: passed to workers through their environment, applied to this process by mallopt."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from curation.allocator import ALLOCATOR_ENV, allocator_env, tune_this_process


def test_settings_a_user_already_chose_are_kept(monkeypatch):
    monkeypatch.setenv("MIMALLOC_PURGE_DELAY", "50")
    env = allocator_env()
    assert env["MIMALLOC_PURGE_DELAY"] == "50"
    assert env["MALLOC_MMAP_THRESHOLD_"] == ALLOCATOR_ENV["MALLOC_MMAP_THRESHOLD_"]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_settings_at_run_time():
    assert tune_this_process()


HOOK = """
import os, sys
seen = []
class FirstPyarrowImport:
    def find_spec(self, name, path=None, target=None):
        if name == "pyarrow" and not seen:
            seen.append(os.environ.get("MIMALLOC_PURGE_DELAY", "unset"))
sys.meta_path.insert(0, FirstPyarrowImport())
import curation.cli
print(seen[0])
"""


def test_the_command_line_exports_them_before_pyarrow_loads():
    out = subprocess.run(
        [sys.executable, "-c", HOOK], capture_output=True, text=True, check=True, env={"PATH": ""}
    ).stdout
    assert out.strip() == ALLOCATOR_ENV["MIMALLOC_PURGE_DELAY"]
