"""The documentation's links: every relative link and image in README.md and docs/*.md
points to an existing file (and, with ``#anchor``, to an existing heading of it), and the
README stays short enough to read (at most 320 lines)."""

import glob
import os
import re

import pytest
from conftest import ROOT

README_MAX_LINES = 320

# [text](target) and ![alt](target), with an optional "title"; text may hold one level of
# brackets (e.g. "[see [1]](x.md)"). Reference-style links are not used in these pages.
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"`[^`]*`")


def doc_pages():
    """README.md and every docs/*.md, as paths relative to the repository root."""
    return ["README.md"] + sorted(os.path.relpath(p, ROOT)
                                  for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))


def _read(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def _prose_lines(text):
    """(line number, line) outside fenced code blocks, inline code blanked out."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, _INLINE_CODE.sub(lambda m: " " * len(m.group()), line)


def github_anchor(heading):
    """The id GitHub gives a heading: its rendered text lowercased, every character that is
    not a letter, digit, space, '-' or '_' dropped, each space made a '-'."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)  # links: text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(text):
    """Every heading anchor of a Markdown page (fenced code excluded; repeated headings get
    GitHub's -1, -2, ... suffixes)."""
    seen, out = {}, set()
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else _HEADING.match(line)
        if m:
            base = github_anchor(m.group(2))
            n = seen.get(base, 0)
            out.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return out


def dead_links(page, text, root):
    """The relative links of ``text`` (the page at ``root/page``) that point nowhere:
    a list of (line number, target, why)."""
    bad = []
    here = os.path.dirname(os.path.join(root, page))
    for number, line in _prose_lines(text):
        for m in _LINK.finditer(line):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = os.path.normpath(os.path.join(here, path)) if path else \
                os.path.join(root, page)
            if not os.path.exists(file):
                bad.append((number, target, "no such file"))
            elif anchor and file.endswith(".md"):
                with open(file, encoding="utf-8") as f:
                    if anchor not in anchors(f.read()):
                        bad.append((number, target, "no such heading"))
    return bad


@pytest.mark.parametrize("page", doc_pages())
def test_every_relative_link_and_image_exists(page):
    bad = dead_links(page, _read(page), ROOT)
    assert not bad, "\n".join(f"{page}:{n}: {t} ({why})" for n, t, why in bad)


def test_readme_is_short():
    lines = _read("README.md").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_docs_pages_exist_and_readme_links_each():
    pages = doc_pages()[1:]
    assert pages, "no docs/*.md"
    targets = {m.group(1).partition("#")[0] for _, line in _prose_lines(_read("README.md"))
               for m in _LINK.finditer(line)}
    assert sorted(p for p in pages if p not in targets) == []



def test_every_figure_is_shown():
    # A figure in results/figures/ that no page shows is a result nobody can find.
    shown = {os.path.basename(m.group(1)) for page in doc_pages()
             for _, line in _prose_lines(_read(page)) for m in _LINK.finditer(line)}
    figures = sorted(os.path.basename(p) for p in
                     glob.glob(os.path.join(ROOT, "results", "figures", "*.png")))
    assert figures and [f for f in figures if f not in shown] == []

def test_the_checker_finds_dead_links(tmp_path):
    # The checker itself, on a page with one good and several dead links of each kind.
    (tmp_path / "docs").mkdir()
    (tmp_path / "fig.png").write_bytes(b"")
    (tmp_path / "docs" / "a.md").write_text(
        "# A page\n\n## The theory check (digits, both patterns, e = 0 ... 1)\n\n"
        "## INCV's selection (Fig. 3)\n\n```bash\n# not a heading\n```\n\n## Speed\n\n## Speed\n")
    text = ("[ok](docs/a.md) [ok](docs/a.md#a-page) ![ok](fig.png) [ok](https://x.org/none.md)\n"
            "[ok](docs/a.md#the-theory-check-digits-both-patterns-e--0--1)\n"
            "[ok](docs/a.md#incvs-selection-fig-3) [ok](docs/a.md#speed-1) [ok](#top)\n"
            "`[not a link](nowhere.md)`\n"
            "```\n[not a link](nowhere.md)\n```\n"
            "# Top\n"
            "[bad](docs/b.md) ![bad](docs/fig.png) [bad](docs/a.md#not-a-heading)\n"
            "[bad](docs/a.md#speed-2) [bad](#nowhere) [bad](docs/a.md#incv's-selection-fig-3)\n")
    (tmp_path / "README.md").write_text(text)
    bad = dead_links("README.md", text, str(tmp_path))
    assert [(n, t) for n, t, _ in bad] == [
        (9, "docs/b.md"), (9, "docs/fig.png"), (9, "docs/a.md#not-a-heading"),
        (10, "docs/a.md#speed-2"), (10, "#nowhere"), (10, "docs/a.md#incv's-selection-fig-3")]
    assert [why for _, _, why in bad] == ["no such file"] * 2 + ["no such heading"] * 4


def test_github_anchor_rules():
    assert github_anchor("Errors and resuming") == "errors-and-resuming"
    assert github_anchor("Several GPUs, and the multi-replica step") == \
        "several-gpus-and-the-multi-replica-step"
    assert github_anchor("Method ranking (Table 1) and the authors' Co-teaching selection") == \
        "method-ranking-table-1-and-the-authors-co-teaching-selection"
    assert github_anchor("`--noise_type` and **k_best**") == "--noise_type-and-k_best"
