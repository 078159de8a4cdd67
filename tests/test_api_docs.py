"""docs/api.md documents the whole public API (the site is built by `mkdocs build --strict` in CI)."""

from pathlib import Path

import crystalzoo

API = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()


def test_every_public_name_is_in_the_api_reference():
    missing = [name for name in crystalzoo.__all__
               if f"::: {getattr(crystalzoo, name).__module__}.{name}\n" not in API]
    assert not missing, f"add these to docs/api.md: {missing}"


def test_the_public_modules_are_in_the_api_reference():
    for module in ("uncertainty", "models.ensembles", "training.recipes", "training.config", "errors", "export"):
        assert f"::: crystalzoo.{module}\n" in API
