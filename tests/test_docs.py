"""The docs show what the code does."""

from pathlib import Path

from crystalzoo.maintainer import markdown_table

ROOT = Path(__file__).resolve().parents[1]


def test_backbone_table_matches_manifest():
    assert markdown_table() in (ROOT / "docs" / "backbones.md").read_text()


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```bash\n")[1:3]]
    assert len(blocks) == 2 and all(blocks), "the README starts with two bash blocks: install + main job, tests"
    for command in blocks:
        assert command in ci


def test_every_python_block_of_the_docs_is_python():
    """The blocks scripts/run_doc_examples.py runs (CI, against the installed wheel) at least
    parse, and use the shipped example structures rather than files of this repository."""
    import ast
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from run_doc_examples import blocks
    finally:
        sys.path.pop(0)
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = 0
    for page in pages:
        for i, code in enumerate(blocks(page), 1):
            ast.parse(code, f"{page.name} block {i}")
            assert "tests/data" not in code, f"{page.name} block {i} reads a file the wheel does not ship"
            found += 1
    assert found >= 15  # 19 when written


def test_readme_links_work_on_a_package_index_page():
    """PyPI shows the README without the repository around it: every link is absolute."""
    import re

    links = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())
    assert links and all(link.startswith(("https://", "http://", "#")) for link in links), links
