"""The documentation: the mkdocs site builds with --strict, README.md stays a front page, and every relative
link in README.md and docs/*.md points at a file (and heading) that exists, so the pages work on GitHub as
well as on the site."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_MAX_LINES = 300


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def without_code(text: str) -> str:
    """The text outside fenced blocks and inline code spans, where links and headings are Markdown."""
    text = re.sub(r"^ *```.*?^ *```", "", text, flags=re.S | re.M)
    text = re.sub(r"``.+?``", "", text, flags=re.S)
    return re.sub(r"`[^`]*`", "", text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (mkdocs' toc agrees for headings without runs of spaces/dashes)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^ *```.*?^ *```", "", path.read_text(), flags=re.S | re.M)
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.M):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", without_code(path.read_text()))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}: ({target})"
        if not destination.is_relative_to(ROOT):
            problems.append(f"{where} leaves the repository, so it breaks on GitHub and on the site")
        elif not destination.exists():
            problems.append(f"{where} points at {destination.relative_to(ROOT)}, which does not exist")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            problems.append(f"{where}: {destination.relative_to(ROOT)} has no heading with anchor #{anchor}")
    return problems


def nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def mkdocs_config() -> dict:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_the_site_builds_with_strict_checks(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "ui" / "runs.png").is_file(), "the UI screenshots must reach the site"


def test_readme_is_a_front_page_that_names_the_commands():
    readme = (ROOT / "README.md").read_text()
    lines = readme.count("\n") + 1
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines: move the detail into docs/ (at most {README_MAX_LINES})"
    )
    for command in (
        "make test",
        "make lint",
        "make docs",
        "make docs-serve",
        "make demo",
        "make report",
        "make ui",
    ):
        assert command in readme, f"README.md does not mention `{command}`"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_an_existing_file_and_heading(path):
    assert broken_links(path) == []


def test_the_link_check_finds_a_broken_file_and_a_broken_anchor(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "a.md").write_text("# Title\n\n## A section\n")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md#a-section) [ok](#own) [missing](nothere.md) [anchor](a.md#nope) [out](../x.md)\n"
        "[web](https://example.org) `[code](not-a-link.md)`\n\n```\n[code](neither.md)\n```\n\n## Own\n"
    )
    problems = broken_links(page)
    assert len(problems) == 3, problems
    assert "nothere.md" in problems[0] and "#nope" in problems[1] and "leaves the repository" in problems[2]


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    pages = nav_pages(mkdocs_config()["nav"])
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert missing == [], f"mkdocs.yml nav names pages that do not exist in docs/: {missing}"
    unlisted = sorted(
        str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if str(p.relative_to(DOCS)) not in pages
    )
    assert unlisted == [], f"pages missing from the nav of mkdocs.yml: {unlisted}"
