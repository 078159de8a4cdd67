"""The ``crystalzoo`` command: list, info, download, predict, finetune, pretrain, export, push.

Run ``crystalzoo COMMAND --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from .errors import ConfigError, CrystalZooError


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


def _size(text: str) -> float | int:
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


def _cmd_list(args) -> None:
    from .registry import get_backbone_info, list_backbones

    rows = [("name", "task", "target", "units", "train", "metric")]
    for name in list_backbones():
        info = get_backbone_info(name)
        m = info.metrics[0] if info.metrics else {}
        metric = f"{m.get('split', '')} {m.get('name', '')} {m.get('value', '')} {m.get('units', '')}".strip()
        rows.append((name, info.task, ", ".join(info.targets), ", ".join(info.units) or "-",
                     str(info.training_data.get("train", "?")), metric))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]  # columns as wide as their text
    for r in rows:
        print("  ".join(v.rjust(w) if i == 4 else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))) + "  " + r[-1])


def _registered_only(name: str, command: str) -> None:
    """``info`` and ``download`` describe registered models: a name that resolves to a folder or
    a Hub repo (as ``predict`` would load it) is named as such instead of being mistaken."""
    from .registry import source_kind

    kind = source_kind(name)
    if kind == "folder":
        from .registry import list_backbones

        shadow = " Run from another folder for the registered model of that name." if name in list_backbones() else ""
        raise ConfigError(f"{command} {name}: {name!r} is a local folder (which predict and finetune would load), "
                          f"not a registered model; its settings are in {Path(name) / 'config.json'}.{shadow}")
    if kind == "hub":
        raise ConfigError(f"{command} {name}: {command} covers registered models; a Hub model is fetched (and "
                          "cached) when it is first loaded, e.g. by predict")


def _cmd_info(args) -> None:
    from dataclasses import asdict

    from .registry import get_backbone_info

    _registered_only(args.name, "info")
    info = asdict(get_backbone_info(args.name))
    if not args.config:
        info.pop("config")
    print(json.dumps(info, indent=2, default=str))


def _cmd_download(args) -> None:
    from .registry import list_backbones, weights_file

    names = args.names or list_backbones()
    for name in names:  # every name checked before anything is fetched
        _registered_only(name, "download")
    from .registry import bundled_path, get_backbone_info

    for name in names:
        info = get_backbone_info(name)
        bundled = info.bundled and bundled_path(info.filename).is_file()
        path = weights_file(name, local_files_only=False)  # verified (sha256) wherever it is
        where = ("in the package (bundled): nothing to fetch" if bundled else
                 f"in the Hugging Face cache, from {info.repo_id}@{info.revision}")
        print(f"{name}: {path} ({info.size:,} bytes, sha256 checked; {where})")


def _cmd_predict(args) -> None:
    from .data import dataset_path, read_dataset
    from .loading import load_model
    from .tables import check_table_path, write_frame
    from .uncertainty import check_coverage

    if bool(args.files) == bool(args.data):
        raise ConfigError("give structure files or --data (a data set), not both and not neither")
    if args.id_column and not args.data:
        raise ConfigError("--id-column names the ids of a --data set; files are named by their paths")
    if args.interval is not None:
        check_coverage(args.interval)
    if args.output is not None:
        check_table_path(args.output, args.overwrite, formats=(".csv", ".json", ".parquet"), example="predictions")
        out = Path(args.output).resolve()
        inputs = [dataset_path(args.data).resolve()] if args.data else [Path(f).resolve() for f in args.files]
        if any(out == p or (p.is_dir() and p in out.parents) for p in inputs):
            raise ConfigError(f"--output {args.output} is {'inside ' if out not in inputs else ''}the data being "
                              "predicted: choose another file")
    model = load_model(args.model, device=args.device)
    model._check_std(args.std, "--std")  # the model's own checks, before any graph is built
    if args.interval is not None:
        model._check_interval(args.interval)
    if args.data:
        data = read_dataset(args.data, [], progress=not args.quiet, settings=model.graph_settings,
                            **({"id_column": args.id_column} if args.id_column else {}))
        ids = data.ids
    else:
        data = [Path(f) for f in args.files]  # file names, never CIF text (a missing file is "no such file")
        ids = list(args.files)
    frame = model.predict_frame(data, ids, return_std=args.std, coverage=args.interval, n_jobs=args.jobs,
                                progress=not args.quiet and len(ids) > 100)
    if args.data:
        frame.insert(1, "source", str(args.data))
    else:
        frame = frame.rename(columns={"id": "file"})
    if args.output is None:  # CSV on stdout, quoted where a file name holds a comma or a quote
        frame.to_csv(sys.stdout, index=False, float_format="%.6g", lineterminator="\n")
    else:
        write_frame(frame, args.output, overwrite=args.overwrite)
        print(f"{args.output}: {len(frame)} crystals, columns {', '.join(frame.columns)}")


def _cmd_embed(args) -> None:
    from .data import dataset_path, read_dataset
    from .embeddings import check_table_path, write_table
    from .loading import load_model

    if bool(args.files) == bool(args.data):
        raise ConfigError("give CIF files or --data (a data set), not both and not neither")
    if args.layer is not None and args.kind != "pooled":
        raise ConfigError("--layer needs --kind pooled (the hidden vector comes after every convolution)")
    check_table_path(args.out, args.overwrite)
    out = Path(args.out).resolve()
    inputs = [dataset_path(args.data).resolve()] if args.data else [Path(f).resolve() for f in args.files]
    if any(out == p or (p.is_dir() and p in out.parents) for p in inputs):
        raise ConfigError(f"--out {args.out} is {'inside ' if out not in inputs else ''}the data being embedded: "
                          "choose another file for the table")
    model = load_model(args.model)
    if args.data:
        data = read_dataset(args.data, [], progress=not args.quiet, settings=model.graph_settings,
                            **({"id_column": args.id_column} if args.id_column else {}))
        ids = data.ids
    else:
        data = [Path(f) for f in args.files]  # file names, never CIF text
        ids = [str(f) for f in args.files]
    vectors = model.embed(data, kind=args.kind, layer=args.layer, n_jobs=args.jobs,
                          progress=not args.quiet and len(ids) > 100)
    write_table(args.out, ids, vectors, overwrite=args.overwrite, prefix=args.kind)
    print(f"{args.out}: {len(ids)} crystals × {vectors.shape[1]} values ({args.kind} vectors of {args.model})")


def _cmd_finetune(args) -> None:
    from .training import check_not_backbone_folder, check_run_options, finetune

    backbone = None if args.backbone == "none" else args.backbone
    common = _training_kwargs(args)
    runs = [(backbone, args.freeze, args.reinit, args.out)]  # as typed: check_run_options refuses an empty one
    stale = Path(args.out) / "baseline"
    if args.baseline and backbone is not None:
        runs.append((None, None, False, stale))
    if args.overwrite and not args.baseline and any((stale / f).exists() for f in ("config.json", "metrics.json")):
        raise ConfigError(f"{stale} holds the baseline of the run --overwrite replaces; pass --baseline to replace "
                          "it too, or move it away (it would be left beside a run it does not belong to)")
    def options(out):  # the baseline from scratch trains every layer: the freeze recipe; an ensemble as the model
        extra = {"ensemble": args.ensemble, "reference": args.reference}
        if out is stale:  # the baseline added above (the user's own run may be from scratch too: left as typed)
            return {**common, "recipe": "freeze", "l2sp_alpha": None, **extra}
        return {**common, **extra}

    for bb, fr, re, out in runs:  # every run's settings, backbone and folder, before anything starts
        check_run_options(target=args.target, out_dir=out, backbone=bb, freeze=fr, reinit=re, **options(out))
        if args.overwrite:  # the baseline's folder too: it must not be the backbone's
            check_not_backbone_folder(out, backbone)
    results = []
    for bb, fr, re, out in runs:
        label = ("from scratch" if bb is None else f"{bb}, freeze={fr}{', reinit' if re else ''}" +
                 (f", {args.recipe}" if args.recipe != "freeze" else "")) + \
            (f", ensemble of {args.ensemble}" if args.ensemble > 1 else "")
        logging.getLogger("crystalzoo").info("fine-tuning (%s) → %s", label, out)
        r = finetune(args.data, args.target, backbone=bb, freeze=fr, reinit=re, out_dir=out, **options(out))
        results.append((label, r))
    sizes = results[0][1].metrics["sizes"]
    print(f"\n{args.target}: {sizes['train']} train / {sizes['val']} validation / {sizes['test']} test crystals, "
          f"seed {args.seed}")
    print(f"{'model':34s} {'test MAE':>10s} {'val MAE':>10s} {'best epoch':>11s} {'seconds':>8s}")
    for label, r in results:
        m = r.metrics
        test = m.get("test", {}).get("mae", float("nan"))
        print(f"{label:34s} {test:10.4f} {m['val']['mae']:10.4f} {m['best_epoch']:11d} {m['train_seconds']:8.1f}")
    print(f"\nmodel, metrics.json, history.json and learning_curve.png in {args.out}")


def _cmd_pretrain(args) -> None:
    from .training import pretrain

    r = pretrain(args.data, args.targets, conv=args.conv, out_dir=args.out, reference=args.reference,
                 **_training_kwargs(args))
    m = r.metrics
    print(f"{'target':30s} {'val MAE':>10s} {'test MAE':>10s}")
    for t in m["targets"]:
        print(f"{t:30s} {m['val'][f'mae_{t}']:10.4f} {m.get('test', {}).get(f'mae_{t}', float('nan')):10.4f}")
    print(f"\nbackbone in {args.out}: load_backbone({str(args.out)!r}, freeze=k)")


def _cmd_push(args) -> None:
    from .hub import push_to_hub
    from .loading import load_model

    commit = push_to_hub(load_model(args.model), args.repo_id, private=args.private,
                         commit_message=args.message, metrics_file=args.metrics, revision=args.revision,
                         create_pr=args.create_pr, tags=args.tags or None, overwrite_card=args.overwrite_card)
    print(commit)


def _cmd_export(args) -> None:
    from .export import INPUT_NAMES, check_out_path, export_onnx
    from .loading import load_model

    check_out_path(args.out, args.overwrite)
    out = Path(args.out)
    model = load_model(args.model)
    export_onnx(model, out, overwrite=args.overwrite)
    what = ", ".join(model.head.columns())
    print(f"{out}: inputs {', '.join(INPUT_NAMES)} (crystalzoo.export.onnx_inputs(graph)); output 'prediction': {what}. "
          "Run it on one thread (onnxruntime: intra_op_num_threads = 1; docs/export.md).")


def _add_training_args(s: argparse.ArgumentParser, epochs: int) -> None:
    """Options shared by ``finetune`` and ``pretrain``: splits, then one option per
    :class:`~crystalzoo.train_config.TrainConfig` setting (its default and help), then output."""
    from .train_config import TrainConfig

    s.add_argument("--train-size", type=_size, default=0.8,
                   help="an integer is a count of crystals, a number between 0 and 1 a fraction of the data "
                        "(default 0.8)")
    s.add_argument("--val-size", type=_size, default=0.1, help="count or fraction, as --train-size (default 0.1)")
    s.add_argument("--test-size", type=_size, default=0.1, help="count or fraction, as --train-size (0: no test set; "
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


def _training_kwargs(args) -> dict:
    """The run options of ``finetune`` / ``pretrain`` from the parsed arguments."""
    from .train_config import TrainConfig

    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "progress"}
    return dict(train_size=args.train_size, val_size=args.val_size, test_size=args.test_size, **options,
                progress=not args.quiet, resume=args.resume, overwrite=args.overwrite)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="crystalzoo", description="Pretrained crystal graph networks (CGCNN).")
    p.add_argument("--version", action="version", version=f"crystalzoo {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="registered backbones").set_defaults(func=_cmd_list)

    s = sub.add_parser("info", help="metadata of one backbone")
    s.add_argument("name", help="a registered name (crystalzoo list)")
    s.add_argument("--config", action="store_true", help="include the full architecture config (default: off)")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("download", help="fetch and verify weights into the Hugging Face cache (for offline use)")
    s.add_argument("names", nargs="*", help="registered names (default: all); each is verified, and fetched into "
                   "the Hugging Face cache unless it is bundled in the package")
    s.set_defaults(func=_cmd_download)

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
    s.add_argument("--jobs", type=int, default=1, help="processes for graph building (default 1; -1: all cores)")
    s.add_argument("--std", action="store_true", help="an ensemble: also the standard deviation over its members")
    s.add_argument("--interval", type=float, default=None, metavar="COVERAGE",
                   help="also calibrated bounds that hold this fraction of crystals, e.g. 0.9 (docs/uncertainty.md)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("files", nargs="*", help="structure files: CIF, POSCAR/CONTCAR/*.vasp, cssr, xsf, res, pymatgen "
                   "JSON/YAML, extended XYZ (.extxyz, the [ase] extra)")
    s.set_defaults(func=_cmd_predict)

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
    s.add_argument("--jobs", type=int, default=1, help="processes for graph building (-1: all cores)")
    s.add_argument("--out", required=True, help="the table: .csv, .npz (ids, vectors) or .parquet (needs pyarrow)")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("files", nargs="*", help="CIF files")
    s.set_defaults(func=_cmd_embed)

    s = sub.add_parser("finetune", help="fine-tune a pretrained backbone on your data")
    s.add_argument("--backbone", default="formation", help="registered name, hf-hub:…, folder, or 'none' (from scratch)")
    s.add_argument("--freeze", type=int, default=None,
                   help="freeze the embedding and the first K convolutions (default: none, every layer trains)")
    s.add_argument("--reinit", action="store_true", help="re-initialise the layers after the frozen ones (paper protocol)")
    s.add_argument("--data", required=True, help="JSON lines (.jsonl/.jsonl.gz), CSV with a 'cif' column, a CGCNN "
                   "folder, or bundled:mp-band-gap")
    s.add_argument("--target", required=True, help="label column / key")
    _add_training_args(s, epochs=30)
    s.add_argument("--ensemble", type=int, default=1, metavar="N",
                   help="train N models with seeds seed … seed+N-1 that predict together, with their spread and "
                        "intervals that widen where they disagree (default 1: a single model; docs/uncertainty.md)")
    s.add_argument("--baseline", action="store_true", help="also train the same architecture from scratch (an "
                   "ensemble of as many members with --ensemble)")
    s.add_argument("--reference", choices=["composition"], default=None,
                   help="composition: add per-element reference values, fitted on the training split, to the "
                        "outputs, so that the network learns what the composition alone does not give (e.g. a total "
                        "energy; default: none; docs/pretraining.md)")
    s.set_defaults(func=_cmd_finetune)

    s = sub.add_parser("pretrain", help="train a new (multi-task) backbone from scratch")
    s.add_argument("--data", required=True, help="JSON lines, CSV with a 'cif' column, a CGCNN folder, or bundled:NAME")
    s.add_argument("--targets", nargs="+", required=True, help="label columns; 'log10:COLUMN' takes log10")
    s.add_argument("--conv", choices=["gated", "attention"], default="gated",
                   help="the convolution: gated (CGCNN) or attention (default gated; docs/pretraining.md)")
    _add_training_args(s, epochs=100)
    s.add_argument("--reference", choices=["composition"], default=None,
                   help="composition: add per-element reference values, fitted on the training split, to the "
                        "outputs, so that the network learns what the composition alone does not give (e.g. a total "
                        "energy; default: none; docs/pretraining.md)")
    s.set_defaults(func=_cmd_pretrain)

    s = sub.add_parser("export", help="write a model as ONNX (needs crystalzoo[export])")
    s.add_argument("--model", required=True, help="a registered name, hf-hub:ORG/NAME[@REV], or a model folder")
    s.add_argument("--out", required=True, help="the .onnx file to write")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    s.set_defaults(func=_cmd_export)

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
    s.set_defaults(func=_cmd_push)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command; a crystalzoo error (bad input, bad settings, a usage error) is one
    line on stderr and exit status 2. Only a real bug shows a traceback. crystalzoo's log
    messages (``logging.getLogger("crystalzoo")``, from INFO up) go to stderr as
    ``crystalzoo: …`` lines while the command runs."""
    log = logging.getLogger("crystalzoo")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("crystalzoo: %(message)s"))
    level, propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # once, also where the program running main() has set up logging
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except CrystalZooError as exc:
        print("crystalzoo: error: " + " ".join(str(exc).split("\n")), file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (predict … | head): nothing more to say
        sys.stderr.close()
        return 0
    except OSError as exc:  # the file system refused a path given (a name too long, no permission): not a bug
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"crystalzoo: error: {exc.strerror or exc}{where}: check the paths given", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a run's lock and temporary files are already cleaned up
        print("crystalzoo: interrupted", file=sys.stderr)
        return 130
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate
    return 0


if __name__ == "__main__":
    sys.exit(main())
