"""The ``crystalzoo`` command's options: one sub-parser per command; every option's help
states its default, and a usage error is one line (``crystalzoo: error: …``)."""

from __future__ import annotations

import argparse
import dataclasses

from ..errors import ConfigError
from .commands import (
    cmd_download,
    cmd_embed,
    cmd_export,
    cmd_finetune,
    cmd_info,
    cmd_list,
    cmd_predict,
    cmd_pretrain,
    cmd_push,
    cmd_rank,
)


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it says it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text.lower() or action.required or action.default is argparse.SUPPRESS
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
                or (not action.option_strings and action.nargs not in ("?", "*"))):
            return text
        if isinstance(action, argparse._StoreTrueAction):
            default = "off"
        elif action.default is None or action.default == []:
            default = "none"
        else:
            default = "%(default)s"
        return f"{text} (default: {default})"


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line, ``crystalzoo: error: …``, like every other error of the command;
    every option's help states its default (:class:`_HelpFormatter`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        command = self.prog.partition(" ")[2]  # "crystalzoo finetune" → "finetune"
        where = f"'{self.prog} --help'" if command else "'crystalzoo --help', or 'crystalzoo COMMAND --help'"
        raise ConfigError(f"{command + ': ' if command else ''}{message} (see {where})")


def split_size(text: str) -> float | int:
    """A split size as typed: an integer is a count, any other number a fraction (which
    :func:`crystalzoo.data.check_split_size` then checks, as for the API)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: give a count of crystals (e.g. 1000) or a "
                                         "fraction between 0 and 1 (e.g. 0.8)") from None


def _add_reference_arg(s: argparse.ArgumentParser) -> None:
    """``--reference``, shared by ``finetune`` and ``pretrain``."""
    s.add_argument("--reference", choices=["composition"], default=None,
                   help="composition: add per-element reference values, fitted on the training split, to the "
                        "outputs, so that the network learns what the composition alone does not give (e.g. a total "
                        "energy; default: none; docs/pretraining.md)")


def _add_training_args(s: argparse.ArgumentParser, epochs: int) -> None:
    """Options shared by ``finetune`` and ``pretrain``: splits, then one option per
    :class:`~crystalzoo.training.config.TrainConfig` setting (its default and help), then output."""
    from ..training.config import TrainConfig

    s.add_argument("--train-size", type=split_size, default=0.8,
                   help="an integer is a count of crystals, a number between 0 and 1 a fraction of the data "
                        "(default 0.8)")
    s.add_argument("--val-size", type=split_size, default=0.1, help="count or fraction, as --train-size (default 0.1)")
    s.add_argument("--test-size", type=split_size, default=0.1, help="count or fraction, as --train-size (0: no test set; "
                   "default 0.1)")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "progress":
            s.add_argument("--quiet", action="store_true", help="no progress bars (default: shown)")
            continue
        default = epochs if f.name == "epochs" else f.default
        s.add_argument("--" + f.name.replace("_", "-"), type=f.metadata["type"], default=default,
                       choices=f.metadata["choices"], metavar=f.metadata["metavar"],
                       help=f.metadata["help"] + ("" if default is None else f" (default {default})"))
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint "
                   "(which must belong to the same data, targets, model and settings)")
    s.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    s.add_argument("--out", required=True, help="output folder (refused if it holds a run, unless --resume or "
                   "--overwrite)")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from ..models import ARCHITECTURES

    families = sorted(ARCHITECTURES)  # the registered backbone families

    p = _Parser(prog="crystalzoo", description="Pretrained crystal graph networks (CGCNN).")
    p.add_argument("--version", action="version", version=f"crystalzoo {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="registered backbones").set_defaults(func=cmd_list)

    s = sub.add_parser("info", help="metadata of one backbone")
    s.add_argument("name", help="a registered name (crystalzoo list)")
    s.add_argument("--config", action="store_true", help="include the full architecture config (default: off)")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("download", help="fetch and verify weights into the Hugging Face cache (for offline use)")
    s.add_argument("names", nargs="*", help="registered names (default: all); each is verified, and fetched into "
                   "the Hugging Face cache unless it is bundled in the package")
    s.set_defaults(func=cmd_download)

    s = sub.add_parser("predict", help="predict properties of structure files or of a data set")
    s.add_argument("--model", required=True, help="a registered name, hf-hub:ORG/NAME[@REV], or a model folder")
    s.add_argument("--data", help="a data set instead of files: JSON lines, CSV with a 'cif' column, a CGCNN folder, "
                   "or bundled:mp-band-gap (its ids name the rows; labels are not needed)")
    s.add_argument("--id-column", help="with --data: the column (CSV) or key (JSON lines) of the ids (default: id or "
                   "mp_id where there is one, else row numbers)")
    s.add_argument("--output", default=None, help="write the table to this file: .csv, .json (records) or .parquet "
                   "(needs pyarrow); default: CSV on standard output")
    s.add_argument("--overwrite", action="store_true", help="replace --output if it exists (default: refuse)")
    s.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda or cuda:N (default: cpu)")
    s.add_argument("--jobs", type=int, default=-1, help="processes that read the files and build the graphs "
                   "(default -1: one per core; reading costs more than the rest, docs/results/performance.md)")
    s.add_argument("--std", action="store_true", help="an ensemble: also the standard deviation over its members")
    s.add_argument("--interval", type=float, default=None, metavar="COVERAGE",
                   help="also calibrated bounds that hold this fraction of crystals, e.g. 0.9 (docs/uncertainty.md)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("files", nargs="*", help="structure files: CIF, POSCAR/CONTCAR/*.vasp, cssr, xsf, res, pymatgen "
                   "JSON/YAML, extended XYZ (.extxyz, the [ase] extra)")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("embed", help="write crystal vectors of a backbone as a table (CSV, NPZ or Parquet)")
    s.add_argument("--model", default="formation", help="a registered name, hf-hub:ORG/NAME[@REV], or a model folder")
    s.add_argument("--data", help="a data set instead of files: JSON lines, CSV with a 'cif' column, a CGCNN folder, "
                   "or bundled:mp-band-gap (its ids name the rows)")
    s.add_argument("--id-column", help="with --data: the column (CSV) or key (JSON lines) of the ids (default: id or "
                   "mp_id where there is one, else row numbers; a CGCNN folder's ids are in id_prop.csv)")
    s.add_argument("--kind", choices=["hidden", "pooled"], default="hidden",
                   help="hidden: the crystal vector the head sees; pooled: the mean of the atom vectors")
    s.add_argument("--layer", type=int, default=None,
                   help="for --kind pooled: after this many convolutions (default: after all of them)")
    s.add_argument("--composition", action="store_true", help="append the composition descriptors of "
                   "crystalzoo.composition (Magpie-style element statistics) to each vector")
    s.add_argument("--jobs", type=int, default=-1, help="processes that read the files and build the graphs "
                   "(default -1: one per core)")
    s.add_argument("--out", required=True, help="the table: .csv, .npz (ids, vectors) or .parquet (needs pyarrow)")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("files", nargs="*", help="CIF files")
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("rank", help="which backbone for my data: transferability scores of every registered "
                       "backbone and freeze depth, before any training (docs/which_backbone.md)")
    s.add_argument("--data", required=True, help="labelled crystals: JSON lines, CSV with a 'cif' column, a CGCNN "
                   "folder, or bundled:mp-band-gap")
    s.add_argument("--target", required=True, help="the label to rank for (a column or key of --data)")
    s.add_argument("--task", choices=["regression", "classification"], default="regression",
                   help="regression: LogME; classification: H-score (default: regression)")
    s.add_argument("--backbones", default=None, help="comma-separated registered names (default: every one)")
    s.add_argument("--limit", type=int, default=None, help="the first N crystals only (default: all)")
    s.add_argument("--output", default=None, help="also write the table as CSV here (default: print only)")
    s.add_argument("--overwrite", action="store_true", help="replace --output if it exists (default: refuse)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_rank)

    s = sub.add_parser("finetune", help="fine-tune a pretrained backbone on your data")
    s.add_argument("--backbone", default="formation", help="registered name, hf-hub:…, folder, or 'none' (from scratch)")
    s.add_argument("--architecture", choices=families, default=None,
                   help="with --backbone none: the family of the new backbone, in its default shape (default: cgcnn)")
    s.add_argument("--freeze", type=int, default=None,
                   help="freeze the embedding and the first K convolutions (default: none, every layer trains)")
    s.add_argument("--reinit", action="store_true", help="re-initialise the layers after the frozen ones (paper protocol)")
    s.add_argument("--data", required=True, help="JSON lines (.jsonl/.jsonl.gz), CSV with a 'cif' column, a CGCNN "
                   "folder, or bundled:mp-band-gap")
    s.add_argument("--target", required=True, help="label column / key")
    s.add_argument("--task", choices=["regression", "classification"], default="regression",
                   help="classification: the labels are classes (0, 1, …), the head predicts their probabilities "
                        "(default: regression)")
    _add_training_args(s, epochs=30)
    s.add_argument("--ensemble", type=int, default=1, metavar="N",
                   help="train N models with seeds seed … seed+N-1 that predict together, with their spread and "
                        "intervals that widen where they disagree (default 1: a single model; docs/uncertainty.md)")
    s.add_argument("--baseline", action="store_true", help="also train the same architecture from scratch (an "
                   "ensemble of as many members with --ensemble)")
    _add_reference_arg(s)
    s.set_defaults(func=cmd_finetune)

    s = sub.add_parser("pretrain", help="train a new (multi-task) backbone from scratch")
    s.add_argument("--data", required=True, help="JSON lines, CSV with a 'cif' column, a CGCNN folder, or bundled:NAME")
    s.add_argument("--targets", nargs="+", required=True, help="label columns; 'log10:COLUMN' takes log10")
    s.add_argument("--architecture", choices=families, default="cgcnn",
                   help="the family of the new backbone, in its default shape (docs/architectures.md)")
    s.add_argument("--conv", choices=["gated", "attention"], default=None,
                   help="a cgcnn's convolution: gated (CGCNN) or attention (default: gated; docs/pretraining.md)")
    _add_training_args(s, epochs=100)
    _add_reference_arg(s)
    s.set_defaults(func=cmd_pretrain)

    s = sub.add_parser("export", help="write a model as ONNX (needs crystalzoo[export])")
    s.add_argument("--model", required=True, help="a registered name, hf-hub:ORG/NAME[@REV], or a model folder")
    s.add_argument("--out", required=True, help="the .onnx file to write")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("push", help="upload a model folder to the Hugging Face Hub")
    s.add_argument("--model", required=True, help="model folder (or any loadable name)")
    s.add_argument("--repo-id", required=True, help="the Hub repo, ORG/NAME (created if it does not exist)")
    s.add_argument("--metrics", default=None, help="metrics.json for the model card (default: the folder's)")
    s.add_argument("--message", default="Upload crystalzoo model", help="the commit message (default: %(default)s)")
    s.add_argument("--private", action="store_true", help="create the repo private (default: public)")
    s.add_argument("--revision", default=None, help="the branch to push to, created if needed (default: main)")
    s.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    s.add_argument("--tags", nargs="*", default=[], help="extra tags for the model card")
    s.add_argument("--overwrite-card", action="store_true",
                   help="replace the repo's README.md with the card made from the model (default: keep one that "
                        "is there)")
    s.set_defaults(func=cmd_push)
    return p
