"""The README and the pages of docs/: their code runs as written, and every relative link and image in them
points at a file that exists (and every #anchor at one of its headings)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
_DISTRIBUTED = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK",
                "LOCAL_WORLD_SIZE"}


def _python_block(page: Path) -> str:
    return re.search(r"```python\n(.*?)```", page.read_text(), re.S).group(1)


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code (a `[1, 0]` there is no link)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`]*`", "", text)


def anchors(path: Path) -> set[str]:
    """The #anchors GitHub gives the headings of a markdown file: lower case, punctuation dropped, spaces to
    hyphens, a repeated one numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    out = set()
    for line in re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def links(path: Path) -> list[str]:
    """Every relative link and image target of a markdown file (web addresses left out)."""
    found = re.findall(r"\]\(([^)\s]+)\)", _prose(path.read_text()))
    return [t for t in found if not re.match(r"[a-z]+:", t)]


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in links(path):
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_and_image_resolves(page):
    assert not broken_links(page), broken_links(page)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(README)}
    assert not [p.name for p in PAGES[1:] if p.resolve() not in linked]


def test_a_broken_link_or_anchor_is_caught(tmp_path):
    (tmp_path / "other.md").write_text("# A page: `inspect`\n\n## Two\n\n## Two\n\n```bash\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-page-inspect) [ok](other.md#two-1) ![gone](images/gone.png) "
                    "[bad](other.md#not-a-heading) [self](#nowhere) `[code](nowhere.md)` [web](https://x.org/y)\n")
    assert broken_links(page) == [f"images/gone.png: no file {tmp_path / 'images' / 'gone.png'}",
                                  "other.md#not-a-heading: no heading #not-a-heading in other.md",
                                  "#nowhere: no heading #nowhere in page.md"]


@pytest.mark.parametrize("before", [None, "min"], ids=["empty-directory", "after-fit-min"])
def test_the_from_python_example_runs_as_written(run_cli, tmp_path, before):
    # in a fresh directory, and where the README's own `fit --task min` already made version_0
    if before:
        run_cli("fit", "--task", before, "--model.members", 4, "--trainer.max_steps", 1000, "--figures", "false",
                "--trainer.enable_progress_bar", "false")
    code = _python_block(ROOT / "docs" / "python-api.md")
    # a user's shell: no seed or process-group variables left by earlier in-process tests
    env = {k: v for k, v in os.environ.items() if not k.startswith("PL_") and k not in _DISTRIBUTED}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    found, circuits = lines[-2].split(" ", 1)
    assert 0 < int(found) <= 16
    assert set(ast.literal_eval(circuits)) <= {"r(a + b) − r(−a − b)", None}  # members 0-2: found or not
    assert lines[-1] == "tensor([[-0.2000]])"  # the best member of a solved add run: 0.3 + (-0.5)
    assert "Traceback" not in out.stderr and "DeprecationWarning" not in out.stderr
