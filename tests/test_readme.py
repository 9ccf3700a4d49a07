"""The README is a user guide that stays true: short, its set-up commands first, every relative link in it
(and in docs/) resolving, and its quick start running as written."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SETUP = "pip install -e '.[dev]' && curate demo\npython3 -m pytest -q\n"
MAX_LINES = 200


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


def section(text: str, heading: str) -> str:
    """The text under a `## heading`, up to the next heading of that level."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def anchors(path: Path) -> set[str]:
    """The anchors a Markdown renderer gives the file's headings (lower case, punctuation dropped)."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def broken_links(doc: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.S | re.M)  # links in code are not links
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    return broken


def test_the_readme_is_at_most_200_lines():
    assert len(README.read_text().splitlines()) <= MAX_LINES


def test_the_two_setup_commands_are_the_first_code_block():
    language, body = code_blocks(README.read_text())[0]
    assert (language, body) == ("bash", SETUP)


@pytest.mark.parametrize(
    "doc", [README, ROOT / "infra" / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name
)
def test_every_relative_link_points_to_an_existing_file(doc):
    assert broken_links(doc) == []


def test_a_broken_link_is_caught(tmp_path):
    (tmp_path / "there.md").write_text("# A heading\n")
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](there.md) [ok](there.md#a-heading) [no](gone.md) [no](there.md#nowhere) [web](https://x.y)\n")
    assert broken_links(doc) == ["gone.md", "there.md#nowhere"]


def quick_start() -> str:
    blocks = code_blocks(section(README.read_text(), "Quick start"))
    assert len(blocks) == 1 and blocks[0][0] == "bash"
    return blocks[0][1]


@pytest.mark.ray
def test_the_quick_start_runs_as_written(tmp_path):
    """The quick start's commands, run by bash from a folder that holds the repository's pipelines/, with
    `curate` being this checkout's CLI; it must leave a complete output behind."""
    script = quick_start()
    assert "curate run pipelines/" in script
    shutil.copytree(ROOT / "pipelines", tmp_path / "pipelines")
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    curate = bin_dir / "curate"
    curate.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m curation.cli "$@"\n')
    curate.chmod(curate.stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a fresh machine has no cluster
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT))

    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = tmp_path / "quickstart" / "curated"
    assert (output / "_SUCCESS").exists() and (output / "report.html").exists()
    assert list((output / "kept").glob("part-*.parquet"))
