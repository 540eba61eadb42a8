"""The README and docs/ describe the product as it is: the two commands first, a newcomer's length, links that
lead somewhere, and no development history (that lives in git)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HISTORY = re.compile(r"earlier session|this session|previous session|issue [0-9]+|lent to one|\b20\d\d-\d\d-\d\d\b",
                     re.IGNORECASE)


def test_readme_opens_with_the_two_commands_and_stays_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    first_block = lines[lines.index("```bash") + 1:lines.index("```")]
    assert [line.split()[:2] for line in first_block] == [["make", "train"], ["make", "test"]]
    assert len(lines) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_development_history(page):
    hits = [line for line in page.read_text().splitlines() if HISTORY.search(line)]
    assert not hits, f"{page.name} narrates history: {hits[:3]}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_lead_to_files(page):
    prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # code blocks hold no links
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", prose)
    missing = [t for t in targets if "://" not in t and not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"
