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
