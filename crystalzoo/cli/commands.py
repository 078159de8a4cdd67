"""The ``crystalzoo`` commands, one function each (``crystalzoo COMMAND --help`` for their options)."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

from ..errors import ConfigError


def cmd_list(args) -> None:
    from ..registry import get_backbone_info, list_backbones

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
    from ..registry import source_kind

    kind = source_kind(name)
    if kind == "folder":
        from ..registry import list_backbones

        shadow = " Run from another folder for the registered model of that name." if name in list_backbones() else ""
        raise ConfigError(f"{command} {name}: {name!r} is a local folder (which predict and finetune would load), "
                          f"not a registered model; its settings are in {Path(name) / 'config.json'}.{shadow}")
    if kind == "hub":
        raise ConfigError(f"{command} {name}: {command} covers registered models; a Hub model is fetched (and "
                          "cached) when it is first loaded, e.g. by predict")


def cmd_info(args) -> None:
    from dataclasses import asdict

    from ..registry import get_backbone_info

    _registered_only(args.name, "info")
    info = asdict(get_backbone_info(args.name))
    if not args.config:
        info.pop("config")
    print(json.dumps(info, indent=2, default=str))


def cmd_download(args) -> None:
    from ..registry import list_backbones, weights_file

    names = args.names or list_backbones()
    for name in names:  # every name checked before anything is fetched
        _registered_only(name, "download")
    from ..registry import bundled_path, get_backbone_info

    for name in names:
        info = get_backbone_info(name)
        bundled = info.bundled and bundled_path(info.filename).is_file()
        path = weights_file(name, local_files_only=False)  # verified (sha256) wherever it is
        where = ("in the package (bundled): nothing to fetch" if bundled else
                 f"in the Hugging Face cache, from {info.repo_id}@{info.revision}")
        print(f"{name}: {path} ({info.size:,} bytes, sha256 checked; {where})")


def check_output_elsewhere(option: str, output: str, args, doing: str) -> None:
    """:class:`ConfigError` when the table ``output`` would be (or be inside) what the command
    reads: the data (``--data`` or the structure files) or the model's folder (``--model``), whose
    files ``--overwrite`` would replace (a prediction table written over its config.json), or a
    file of any other saved model's folder."""
    from ..data.dataset import dataset_path
    from ..registry import source_kind

    out = Path(output).resolve()
    inputs = [dataset_path(args.data).resolve()] if args.data else [Path(f).resolve() for f in args.files]
    if any(out == p or (p.is_dir() and p in out.parents) for p in inputs):
        raise ConfigError(f"{option} {output} is {'inside ' if out not in inputs else ''}the data being {doing}: "
                          "choose another file for the table")
    if getattr(args, "model", None) is not None and source_kind(args.model) == "folder":
        folder = Path(args.model).resolve()
        if out == folder or folder in out.parents:
            raise ConfigError(f"{option} {output} is inside the folder of --model {args.model}, whose files it would "
                              "replace: choose a file outside the model's folder")
    if out.exists() and (out.parent / "config.json").is_file() and any(out.parent.glob("*.safetensors")):
        raise ConfigError(f"{option} {output} is a file of the saved model in {out.parent}: the table would replace "
                          "it and the folder would no longer load; choose a file outside the model's folder")


def check_not_a_structure_file(option: str, output: str, data) -> None:
    """:class:`ConfigError` when the table ``output`` is a structure file that the rows of the
    data set ``data`` name (a CSV or JSON-lines column of paths): ``--overwrite`` would destroy it."""
    if str(Path(output).resolve()) in data.info.get("structure_files", ()):
        raise ConfigError(f"{option} {output} is a structure file of the data being read: choose another file for "
                          "the table")


def cmd_predict(args) -> None:
    from ..data.dataset import read_dataset
    from ..models.factory import load_model
    from ..tables import check_table_path, write_frame
    from ..uncertainty import check_coverage

    if bool(args.files) == bool(args.data):
        raise ConfigError("give structure files or --data (a data set), not both and not neither")
    if args.id_column and not args.data:
        raise ConfigError("--id-column names the ids of a --data set; files are named by their paths")
    if args.interval is not None:
        check_coverage(args.interval)
    if args.output is not None:
        check_table_path(args.output, args.overwrite, formats=(".csv", ".json", ".parquet"), example="predictions")
        check_output_elsewhere("--output", args.output, args, "predicted")
    model = load_model(args.model, device=args.device)
    model.check_return_std(args.std, "--std")  # the model's own checks, before any graph is built
    if args.interval is not None:
        model.check_interval_coverage(args.interval)
    if args.data:
        data = read_dataset(args.data, [], progress=not args.quiet, settings=model.graph_settings, n_jobs=args.jobs,
                            **({"id_column": args.id_column} if args.id_column else {}))
        if args.output is not None:
            check_not_a_structure_file("--output", args.output, data)
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
        frame.to_csv(sys.stdout, index=False, float_format="%.9g", lineterminator="\n")  # float32 round-trips
    else:
        write_frame(frame, args.output, overwrite=args.overwrite)
        print(f"{args.output}: {len(frame)} crystals, columns {', '.join(frame.columns)}")


def cmd_embed(args) -> None:
    from ..data.dataset import read_dataset
    from ..embeddings import check_vector_path, write_table
    from ..models.factory import load_model

    if bool(args.files) == bool(args.data):
        raise ConfigError("give CIF files or --data (a data set), not both and not neither")
    if args.layer is not None and args.kind != "pooled":
        raise ConfigError("--layer needs --kind pooled (the hidden vector comes after every convolution)")
    check_vector_path(args.out, args.overwrite)
    check_output_elsewhere("--out", args.out, args, "embedded")
    model = load_model(args.model)
    model.embed([], kind=args.kind, layer=args.layer)  # --layer and --kind checked before any graph is built
    if args.data:
        data = read_dataset(args.data, [], progress=not args.quiet, settings=model.graph_settings, n_jobs=args.jobs,
                            **({"id_column": args.id_column} if args.id_column else {}))
        check_not_a_structure_file("--out", args.out, data)
        ids = data.ids
    else:
        data = [Path(f) for f in args.files]  # file names, never CIF text
        ids = [str(f) for f in args.files]
    vectors = model.embed(data, kind=args.kind, layer=args.layer, n_jobs=args.jobs,
                          progress=not args.quiet and len(ids) > 100, composition=args.composition)
    from ..composition import COMPOSITION_NAMES

    write_table(args.out, ids, vectors, overwrite=args.overwrite, prefix=args.kind,
                names=COMPOSITION_NAMES if args.composition else ())
    print(f"{args.out}: {len(ids)} crystals × {vectors.shape[1]} values ({args.kind} vectors of {args.model}"
          f"{', then the composition descriptors' if args.composition else ''})")


def cmd_rank(args) -> None:
    from ..transfer import rank_backbones

    if args.output is not None:
        from ..tables import check_table_path

        check_table_path(args.output, args.overwrite, formats=(".csv",), example="ranking")
        check_output_elsewhere("--output", args.output, args, "ranked")
        if not Path(args.output).resolve().parent.is_dir():
            raise ConfigError(f"--output {args.output}: its folder does not exist; create it first")
    names = [n.strip() for n in args.backbones.split(",") if n.strip()] if args.backbones else None
    ranking = rank_backbones(args.data, args.target, backbones=names, task=args.task, limit=args.limit,
                             progress=not args.quiet)
    print(ranking)
    if args.output is not None:
        from ..tables import write_frame

        write_frame(ranking.to_frame(), args.output, overwrite=args.overwrite)


def cmd_finetune(args) -> None:
    from ..training import check_not_backbone_folder, check_run_options, finetune

    backbone = None if args.backbone == "none" else args.backbone
    common = _training_kwargs(args)
    runs = [(backbone, args.freeze, args.reinit, args.out)]  # as typed: check_run_options refuses an empty one
    stale = Path(args.out) / "baseline"
    if args.baseline and backbone is not None:
        runs.append((None, None, False, stale))
    if args.architecture is not None and backbone is not None:
        raise ConfigError(f"--architecture {args.architecture} shapes a model from scratch (--backbone none); the "
                          f"backbone {backbone} has its own (--baseline trains that one from scratch)")
    if args.overwrite and not args.baseline and any((stale / f).exists() for f in ("config.json", "metrics.json")):
        raise ConfigError(f"{stale} holds the baseline of the run --overwrite replaces; pass --baseline to replace "
                          "it too, or move it away (it would be left beside a run it does not belong to)")
    def options(out):  # the baseline from scratch trains every layer: the freeze recipe; an ensemble as the model
        extra = {"ensemble": args.ensemble, "reference": args.reference, "task": args.task}
        if out is stale:  # the baseline added above (the user's own run may be from scratch too: left as typed)
            return {**common, "recipe": "freeze", "l2sp_alpha": None, "architecture": baseline_architecture(backbone),
                    **extra}
        return {**common, **extra, **({"architecture": args.architecture} if args.architecture else {})}

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
    metric, name = ("accuracy", "accuracy") if args.task == "classification" else ("mae", "MAE")
    print(f"{'model':34s} {'test ' + name:>14s} {'val ' + name:>14s} {'best epoch':>11s} {'seconds':>8s}")
    for label, r in results:
        m = r.metrics
        test = m.get("test", {}).get(metric, float("nan"))
        print(f"{label:34s} {test:14.4f} {m['val'][metric]:14.4f} {m['best_epoch']:11d} {m['train_seconds']:8.1f}")
    print(f"\nmodel, metrics.json, history.json and learning_curve.png in {args.out}")


def baseline_architecture(backbone: str) -> dict:
    """The family and shape of ``backbone`` (registered, a folder or ``hf-hub:``, whose config is
    fetched), for ``--baseline``: the same network trained from scratch."""
    from ..models.architectures import DEFAULT_ARCHITECTURE
    from ..registry import backbone_config

    config = backbone_config(backbone)
    return {"name": config.get("architecture", DEFAULT_ARCHITECTURE), **config["backbone"]}


def cmd_pretrain(args) -> None:
    from ..training import pretrain

    r = pretrain(args.data, args.targets, architecture=args.architecture, conv=args.conv, out_dir=args.out,
                 reference=args.reference,
                 **_training_kwargs(args))
    m = r.metrics
    print(f"{'target':30s} {'val MAE':>10s} {'test MAE':>10s}")
    for t in m["targets"]:
        print(f"{t:30s} {m['val'][f'mae_{t}']:10.4f} {m.get('test', {}).get(f'mae_{t}', float('nan')):10.4f}")
    print(f"\nbackbone in {args.out}: load_backbone({str(args.out)!r}, freeze=k)")


def cmd_push(args) -> None:
    from ..hub import push_to_hub
    from ..models.factory import load_model

    commit = push_to_hub(load_model(args.model), args.repo_id, private=args.private,
                         commit_message=args.message, metrics_file=args.metrics, revision=args.revision,
                         create_pr=args.create_pr, tags=args.tags or None, overwrite_card=args.overwrite_card)
    print(commit)


def cmd_export(args) -> None:
    from ..export import INPUT_NAMES, check_out_path, export_onnx
    from ..models.factory import load_model

    check_out_path(args.out, args.overwrite)
    out = Path(args.out)
    model = load_model(args.model)
    export_onnx(model, out, overwrite=args.overwrite)
    what = ", ".join(model.head.columns())
    print(f"{out}: inputs {', '.join(INPUT_NAMES)} (crystalzoo.export.onnx_inputs(graph)); output 'prediction': {what}. "
          "Run it on one thread (onnxruntime: intra_op_num_threads = 1; docs/export.md).")


def _training_kwargs(args) -> dict:
    """The run options of ``finetune`` / ``pretrain`` from the parsed arguments."""
    from ..training.config import TrainConfig

    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "progress"}
    return dict(train_size=args.train_size, val_size=args.val_size, test_size=args.test_size, **options,
                progress=not args.quiet, resume=args.resume, overwrite=args.overwrite)
