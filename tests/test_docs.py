"""The documentation a reader follows: every citation of the method or evaluation document
points into docs/ at a section that exists, and every relative link in the README and
docs/ names a file of the repository."""

import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ("METHOD.md", "EVALUATION.md")
TEXT_SUFFIXES = (".py", ".md", ".sh", ".toml", ".txt", ".cfg")


def _tracked_text_files() -> list[str]:
    """The repository's text files (tracked or new, not ignored), as a clean clone has them."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [p for p in out.splitlines()
            if p.endswith(TEXT_SUFFIXES) and os.path.isfile(os.path.join(ROOT, p))]


def _read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def _numbered_sections(doc: str) -> set[int]:
    return {int(n) for n in re.findall(r"^## (\d+)\. ", _read(f"docs/{doc}"), re.M)}


def test_the_cited_documents_are_in_the_repository():
    for doc in DOCS:
        assert os.path.isfile(os.path.join(ROOT, "docs", doc)), doc
    for name in ("LICENSE", "CHANGELOG.md", "docs/RESULTS.md"):
        assert os.path.isfile(os.path.join(ROOT, name)), name


def test_every_citation_points_into_docs():
    """`METHOD.md` alone names a file outside the repository; inside docs/ the documents
    link to each other by their relative name, as a Markdown link."""
    bare = re.compile(r"(?<![/\w(])(" + "|".join(re.escape(d) for d in DOCS) + r")")
    offenders = []
    for path in _tracked_text_files():
        if path == "tests/test_docs.py":  # names the documents to look for them
            continue
        text = _read(path)
        if path.startswith("docs/"):
            text = re.sub(r"\]\((METHOD|EVALUATION|RESULTS)\.md[^)]*\)", "]()", text)
            text = re.sub(r"\[(METHOD|EVALUATION|RESULTS)\.md\]", "[]", text)
        for m in bare.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            offenders.append(f"{path}:{line}")
    assert offenders == [], offenders


def test_every_cited_section_exists():
    sections = {doc: _numbered_sections(doc) for doc in DOCS}
    assert sections["METHOD.md"] >= {1, 2, 3, 4, 5}
    cite = re.compile(r"docs/(METHOD|EVALUATION)\.md,? sections? (\d+)(?:\s*-\s*(\d+))?")
    missing = []
    for path in _tracked_text_files():
        for m in cite.finditer(_read(path)):
            doc, first = f"{m.group(1)}.md", int(m.group(2))
            for n in range(first, int(m.group(3) or first) + 1):
                if n not in sections[doc]:
                    missing.append(f"{path}: {m.group(0)}")
    assert missing == [], missing


def test_relative_links_in_the_readme_and_docs_resolve():
    link = re.compile(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)")
    broken = []
    for path in ["README.md", "CHANGELOG.md"] + [f"docs/{n}" for n in os.listdir(
            os.path.join(ROOT, "docs")) if n.endswith(".md")]:
        base = os.path.dirname(os.path.join(ROOT, path))
        for target in link.findall(_read(path)):
            if not os.path.exists(os.path.normpath(os.path.join(base, target))):
                broken.append(f"{path} -> {target}")
    assert broken == [], broken


def test_license_is_the_apache_2_0_text():
    text = _read("LICENSE")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert 'license = {text = "Apache-2.0"}' in _read("pyproject.toml")
