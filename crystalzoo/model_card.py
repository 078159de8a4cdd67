"""Model cards: the README.md of a model pushed to the Hub, made from the model, its config and
its metrics (the card's metadata header comes from :mod:`crystalzoo.hub`, the one module that
imports ``huggingface_hub``)."""

from __future__ import annotations

from typing import Any

#: the line that marks a card crystalzoo made: such a card is replaced on the next push, one
#: without it (written or edited by its author) is kept unless ``overwrite_card=True``
CARD_MARK = ("<!-- made by crystalzoo from the model and replaced on each push; delete this line to keep your edits -->")


def card_tags(config: dict[str, Any]) -> list[str]:
    """The model card's fixed tags, the model's family among them (``push_to_hub(tags=…)`` adds more)."""
    # configs written before families were named are CGCNNs (models.architectures.DEFAULT_ARCHITECTURE, which
    # this module cannot import: the Hub client that uses it is imported by the loading funnel)
    return ["materials-science", str(config.get("architecture", "cgcnn")), "crystal-graph", "crystalzoo"]


def base_model(backbone: Any) -> str | None:
    """The Hub repo a fine-tune started from: a registered backbone's repo, or an
    ``hf-hub:`` backbone's (without its revision); None for a local folder or from scratch."""
    if not isinstance(backbone, str) or backbone == "none":
        return None
    if backbone.startswith("hf-hub:"):
        return backbone[len("hf-hub:"):].split("@")[0]
    from .manifest import read_manifest

    entry = read_manifest()["weights"].get(backbone)
    return entry["hub"]["repo_id"] if entry else None


def target_units(head: dict[str, Any]) -> dict[str, str]:
    """A head config's unit of each target ("" where it has none; a classifier: no targets with units)."""
    if head.get("task") != "regression":
        return {}
    return dict(zip(head["targets"], head.get("units") or []))


def unit_note(key: str, units: dict[str, str]) -> str:
    """`` (eV)`` for a metric in a target's units (an MAE, an interval's width: the target named
    at the end of the key, or the only one), else nothing (a coverage, an accuracy)."""
    if not key.startswith(("mae", "interval_width")):
        return ""
    target = max((t for t in units if key.endswith("_" + t)), key=len, default=None)
    unit = units.get(target) if target else (next(iter(units.values())) if len(set(units.values())) == 1 else None)
    return f" ({unit})" if unit else ""


def card_text(model, repo_id: str, config: dict[str, Any], metrics: dict[str, Any] | None, card_yaml: str) -> str:
    """The model card (README.md) of ``model`` in the Hub repo ``repo_id``: ``card_yaml`` (the
    metadata, which :mod:`crystalzoo.hub` makes), what the model is (its family's own
    description), how it was trained, its metrics, how to use it, its license and citations."""
    from . import __version__

    backbone = model.member_models()[0].backbone

    head = config["head"]
    meta = config.get("meta", {})
    units = [u for u in head.get("units") or [] if u]
    lines = [
        "---", card_yaml.rstrip("\n"), "---", CARD_MARK, "",
        f"# {repo_id}", "",
        f"{backbone.description} ({model.task}) for **{', '.join(head['targets'])}**"
        + (f" in {', '.join(units)}" if units else "") + ", made with "
        f"[crystalzoo](https://pypi.org/project/crystalzoo/) {__version__}.",
        "",
    ]
    if meta.get("backbone") and meta["backbone"] != "none":
        base = base_model(meta["backbone"])
        lines += [(f"Fine-tuned from the crystalzoo backbone `{meta['backbone']}`"
                   + (f" ([{base}](https://huggingface.co/{base}))" if base else "")
                   + (f" with the embedding and the first {meta['freeze']} convolutions frozen."
                      if meta.get("freeze") is not None else ", every layer trained.")), ""]
    elif meta.get("backbone") == "none":
        lines += ["Trained from scratch.", ""]
    ensemble = config.get("ensemble", {}).get("members") if isinstance(config.get("ensemble"), dict) else None
    if ensemble:
        lines += [f"An ensemble of {ensemble} models trained with different seeds: `predict` gives their mean, "
                  "`predict(structures, return_std=True)` also their standard deviation.", ""]
    calibration = config.get("calibration")
    if isinstance(calibration, dict):
        counts = calibration.get("counts") or []
        targets = calibration.get("targets") or []
        on = (str(counts[0]) if len(counts) == 1 else
              ", ".join(f"{n} ({t})" for n, t in zip(counts, targets)))
        lines += [f"Calibrated prediction intervals ({calibration.get('method')}, on {on} "
                  f"{calibration.get('split')} crystals; width {'scaled by the ensemble spread' if ensemble else 'constant'}"
                  "): `lower, upper = model.predict_interval(structures, coverage=0.9)`. They hold the stated "
                  "fraction of crystals drawn like the calibration crystals"
                  + ("; `coverage_90` below is the fraction of test crystals inside the 90 % intervals."
                     if "coverage_90" in ((metrics or {}).get("test") or {}) else "."), ""]
    if metrics:
        lines += ["## Metrics", "", "| split | metric | value |", "|---|---|---|"]
        named = target_units(head)
        for split in ("val", "test"):
            for k, v in (metrics.get(split) or {}).items():
                if k != "loss":
                    shown = k + unit_note(k, named)
                    lines.append(f"| {split} | {shown} | {'–' if v is None or v != v else f'{v:.4f}'} |")
        if metrics.get("sizes"):
            s = metrics["sizes"]
            lines += ["", f"Training data: {s.get('train')} train / {s.get('val')} validation / {s.get('test')} test "
                      "crystals" + (f" of `{metrics['data']}`" if metrics.get("data") else "") + "."]
        lines.append("")
    use = ['model.predict(["my_crystal.cif"])                # CIF, POSCAR, … files, or pymatgen Structures']
    if ensemble:
        use.append('mean, std = model.predict(["my_crystal.cif"], return_std=True)')
    if isinstance(calibration, dict):
        use.append('lower, upper = model.predict_interval(["my_crystal.cif"], coverage=0.9)')
    lines += [
        "## Use", "", "```bash", "pip install crystalzoo", "```", "", "```python", "from crystalzoo import load_model",
        "", f'model = load_model("hf-hub:{repo_id}")', *use, "```", "",
        "Graph settings (they belong to these weights): " + ", ".join(f"{k}={v}" for k, v in config["graph"].items()),
        "", "## License and citation", "",
        "MIT." + (f" {backbone.citation}." if backbone.citation else "") + " If the model was trained on "
        "Materials Project data, cite A. Jain et al., APL Materials 1, 011002 (2013).", "",
    ]
    return "\n".join(lines)
