"""The documentation in the repository stands on its own, for people who clone it.

* Every provider doc-bug id cited in the code (``A-n`` AliX Pay, ``F-n`` Fuspay
  Axis, ``C-n`` Changelly) has an entry, a heading or a list item, in
  ``docs/providers.md``; each id has exactly one.
* Every relative link in ``README.md`` and ``docs/*.md`` points to a file inside
  the repository, and a ``#fragment`` on a link to a Markdown file names one of
  its headings (GitHub's anchor rules).
* ``README.md`` and ``docs/`` no longer send readers to ``../shared``, which a
  clone does not have, and the README links the two docs instead.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROVIDERS_DOC = ROOT / "docs" / "providers.md"
ARCHITECTURE_DOC = ROOT / "docs" / "architecture.md"
README = ROOT / "README.md"
# Where code may cite a doc bug; devkit/ is included once it exists.
CODE_DIRS = ("config", "orders", "receiver", "workers", "devkit", "tests", "bench")

# A doc-bug id as the code cites it: "doc bug A-3", "(C-6)", "C-1..C-9". Not part of
# a longer token, so an order id such as "ORDER-A-1" or "XA-12" is not one.
DOC_BUG_ID = re.compile(r"(?<![\w-])([ACF]-[1-9][0-9]?)(?![\w-])")
# An entry in providers.md: a heading or a list item that starts with the id.
DOC_BUG_ENTRY = re.compile(
    r"^(?:#{1,6}[ \t]+|[ \t]*[-*][ \t]+(?:\*\*)?)`?([ACF]-[1-9][0-9]?)\b", re.MULTILINE
)

FENCED_BLOCK = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+).+?\1", re.DOTALL)
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^[ \t]{0,3}\[[^\]]+\]:[ \t]*<?(\S+?)>?(?:[ \t]+.*)?$", re.MULTILINE)
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def cited_doc_bugs() -> dict[str, list[str]]:
    """Every doc-bug id cited in the code's ``.py`` files -> where (``path:line``)."""
    cited: dict[str, list[str]] = defaultdict(list)
    for folder in CODE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            for number, line in enumerate(text.splitlines(), start=1):
                for match in DOC_BUG_ID.finditer(line):
                    cited[match.group(1)].append(f"{path.relative_to(ROOT).as_posix()}:{number}")
    return dict(cited)


def documented_doc_bugs() -> list[str]:
    """The ids with an entry in docs/providers.md, once per entry."""
    return DOC_BUG_ENTRY.findall(PROVIDERS_DOC.read_text(encoding="utf-8"))


def without_code(markdown: str) -> str:
    """``markdown`` without fenced blocks and inline code spans (links there are examples)."""
    return INLINE_CODE.sub("", FENCED_BLOCK.sub("", markdown))


def links(markdown: str) -> list[str]:
    text = without_code(markdown)
    return INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, duplicates numbered as GitHub does."""
    found: set[str] = set()
    counts: dict[str, int] = defaultdict(int)
    for heading in HEADING.findall(FENCED_BLOCK.sub("", path.read_text(encoding="utf-8"))):
        base = anchor(heading)
        found.add(base if counts[base] == 0 else f"{base}-{counts[base]}")
        counts[base] += 1
    return found


def broken_links(path: Path, text: str | None = None) -> list[str]:
    """What is wrong with the relative links of one Markdown file (``text``: its content,
    read from ``path`` when not given)."""
    problems = []
    if text is None:
        text = path.read_text(encoding="utf-8")
    for target in links(text):
        if URL_SCHEME.match(target):
            continue  # http:, https:, mailto:
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT).as_posix()}: {target}"
        if not linked.is_relative_to(ROOT):
            problems.append(f"{where} leaves the repository")
        elif not linked.exists():
            problems.append(f"{where} does not exist")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            problems.append(f"{where}: no heading with the anchor #{fragment}")
    return problems


# --------------------------------------------------------------------------- doc bugs


def test_the_code_scan_is_not_vacuous() -> None:
    cited = cited_doc_bugs()
    assert len(cited) >= 15, sorted(cited)
    assert {i[0] for i in cited} == {"A", "C", "F"}
    # Known citations are seen (positive controls).
    assert any(w.startswith("orders/providers/alixpay/signing.py:") for w in cited["A-3"])
    assert any(w.startswith("orders/providers/fuspay/signing.py:") for w in cited["F-7"])
    assert any(w.startswith("orders/providers/changelly/adapter.py:") for w in cited["C-1"])


def test_every_doc_bug_cited_in_the_code_has_an_entry_in_providers_md() -> None:
    documented = set(documented_doc_bugs())
    missing = {i: where for i, where in sorted(cited_doc_bugs().items()) if i not in documented}
    assert not missing, f"doc bugs cited in the code but without an entry in docs/providers.md: {missing}"


def test_each_doc_bug_has_exactly_one_entry() -> None:
    entries = documented_doc_bugs()
    twice = sorted({i for i in entries if entries.count(i) > 1})
    assert not twice, f"doc bugs with more than one entry in docs/providers.md: {twice}"
    # Every provider's list runs from 1 without gaps, so an id is never reused.
    for prefix in "ACF":
        numbers = sorted(int(i[2:]) for i in entries if i[0] == prefix)
        assert numbers == list(range(1, len(numbers) + 1)), (prefix, numbers)


@pytest.mark.parametrize(
    ("line", "ids"),
    [
        ("(doc bug A-3: the partner secretKey)", ["A-3"]),
        ("Facts and doc bugs (C-1..C-9): section 3.", ["C-1", "C-9"]),
        ("doc bug F-10), so it is read", ["F-10"]),
        ('external_order_id="ORDER-A-1", ref "XA-12", "F-7x", "C-0"', []),
    ],
)
def test_the_id_pattern(line: str, ids: list[str]) -> None:
    assert DOC_BUG_ID.findall(line) == ids


def test_the_entry_pattern() -> None:
    text = "#### A-3: Which secret\n* **F-7:** recipe\n- C-2 amountFrom\nsee A-4 in the prose\n"
    assert DOC_BUG_ENTRY.findall(text) == ["A-3", "F-7", "C-2"]


# --------------------------------------------------------------------------- links


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_to_files_in_the_repository(path: Path) -> None:
    assert path.exists()
    assert broken_links(path) == []


def test_the_link_checker_catches_broken_links() -> None:
    page = ROOT / "docs" / "example.md"  # never written: the checker is given its text
    text = (
        "[ok](architecture.md) [ok](providers.md#4-doc-bugs) [web](https://example.com/x.md)\n"
        "[gone](missing.md) [anchor](providers.md#no-such-heading) [out](../../elsewhere.md)\n"
        "`[code](not-a-link.md)`\n```\n[block](also-not-a-link.md)\n```\n"
        "[ref]: ../README.md\n[ref-gone]: nowhere.md\n"
    )
    assert broken_links(page, text) == [
        "docs/example.md: missing.md does not exist",
        "docs/example.md: providers.md#no-such-heading: no heading with the anchor #no-such-heading",
        "docs/example.md: ../../elsewhere.md leaves the repository",
        "docs/example.md: nowhere.md does not exist",
    ]


def test_anchors_follow_github() -> None:
    assert anchor("A-3: Which secretKey ends the IPN/response string") == (
        "a-3-which-secretkey-ends-the-ipnresponse-string"
    )
    assert anchor("C-6: GET /v1/orders inconsistencies") == "c-6-get-v1orders-inconsistencies"
    assert anchor("4. Doc bugs") == "4-doc-bugs"
    assert anchor("Deploying on `Procfile` hosting") == "deploying-on-procfile-hosting"


# --------------------------------------------------------------------------- ../shared


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_reference_to_the_shared_folder(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for stale in ("../shared", "shared/DESIGN.md", "shared/reference"):
        assert stale not in text, f"{path.relative_to(ROOT).as_posix()} still refers to {stale}"


def test_the_readme_links_the_docs() -> None:
    targets = links(README.read_text(encoding="utf-8"))
    assert "docs/architecture.md" in targets
    assert "docs/providers.md" in targets
    assert ARCHITECTURE_DOC.exists() and PROVIDERS_DOC.exists()


def test_the_readme_opens_with_its_title_and_the_two_commands() -> None:
    """The README's first lines: the title, then exactly ``make run`` and ``make test``, the
    two commands that work on a fresh machine (a scripted edit once put a paragraph of the
    performance section above them); and ``make bench``'s table sits in its own section."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# rampwatch"
    block = []
    for line in lines[2:]:
        if not line.startswith("    "):
            break
        block.append(line.split("#", 1)[0].strip())
    assert block == ["make run", "make test"], lines[:6]
    text = README.read_text(encoding="utf-8")
    soak, perf = text.index("rampwatch soak:"), text.index("## Performance")
    assert soak < perf and "bench             | case" not in text[:perf]
