"""Export a model to ONNX, to run without crystalzoo or PyTorch (onnxruntime, other
runtimes). Needs the ``[export]`` extra: ``pip install "crystalzoo[export]"`` (onnx,
onnxscript, onnxruntime) and torch >= 2.5.

The exported graph takes the tensors of a :class:`~crystalzoo.graphs.crystal_graph.CrystalGraph`
(:data:`INPUT_NAMES`, edge weights included; :func:`onnx_inputs` makes them from a graph) for any number of
crystals, atoms and edges, and returns the predictions in the target's units, as
``model.predict`` does (class probabilities for a classifier).

Example::

    >>> from crystalzoo import build_graph, load_model
    >>> from crystalzoo.export import export_onnx, onnx_inputs
    >>> path = export_onnx(load_model("formation"), "/tmp/formation.onnx")  # doctest: +SKIP
    >>> import onnxruntime  # doctest: +SKIP
    >>> options = onnxruntime.SessionOptions()  # doctest: +SKIP
    >>> options.intra_op_num_threads = 1  # threaded ScatterND add loses updates (docs/export.md)  # doctest: +SKIP
    >>> session = onnxruntime.InferenceSession(str(path), options)  # doctest: +SKIP
    >>> from crystalzoo import example_structures
    >>> session.run(None, onnx_inputs(build_graph(example_structures()[0])))[0].round(2)  # doctest: +SKIP
    array([[-2.11]], dtype=float32)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import CrystalZooError, MissingExtraError
from .graphs.crystal_graph import CrystalGraph
from .models.crystal_model import CrystalModel

#: the inputs of an exported model, in order
INPUT_NAMES = ("atom_fea", "bond_fea", "src", "dst", "crystal", "n_atoms", "edge_weight")
EXPORT_INSTALL = 'pip install "crystalzoo[export]"'


class _OnGraphTensors(nn.Module):
    """The model as a function of the graph's tensors, outputs in the target's units."""

    def __init__(self, model: CrystalModel):
        super().__init__()
        self.model = model

    def forward(self, atom_fea, bond_fea, src, dst, crystal, n_atoms, edge_weight):
        g = CrystalGraph(atom_fea=atom_fea, bond_fea=bond_fea, src=src, dst=dst, crystal=crystal, n_atoms=n_atoms,
                         edge_weight=edge_weight)
        return self.model.output_in_units(self.model(g))


def onnx_inputs(g: CrystalGraph) -> dict[str, np.ndarray]:
    """The inputs of an exported model for the crystals of ``g``, by name (edge weights of 1
    where the graph has none)."""
    g = _with_weights(g)
    return {name: getattr(g, name).detach().cpu().numpy() for name in INPUT_NAMES}


def _with_weights(g: CrystalGraph) -> CrystalGraph:
    import dataclasses

    if g.edge_weight is not None:
        return g
    return dataclasses.replace(g, edge_weight=torch.ones(g.total_edges, dtype=g.bond_fea.dtype, device=g.device))


def export_onnx(model: CrystalModel, path: str | os.PathLike, example: CrystalGraph | None = None,
                opset: int = 18, overwrite: bool = False) -> Path:
    """Write ``model`` (in eval mode) as an ONNX file (a name ending in ``.onnx``) with dynamic
    numbers of crystals, atoms and edges; returns the path. ``example``: a graph to trace
    with (default: three small built-in crystals). An existing file is refused unless
    ``overwrite=True``, and then only replaced by a finished export.
    """
    from torch.export import Dim

    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"ONNX export needs the [export] extra: {EXPORT_INSTALL} ({exc})") from None
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 5):
        raise MissingExtraError(f"ONNX export needs torch >= 2.5 (this is {torch.__version__}): pip install -U torch")
    if not isinstance(model, CrystalModel):
        hint = (f": export its members one by one (model.members[0] … [{len(model.members) - 1}]) and average their "
                "outputs" if hasattr(model, "members") else "")
        raise CrystalZooError(f"export_onnx takes a CrystalModel (e.g. load_model(name)), not a "
                              f"{type(model).__name__}{hint}")
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        raise CrystalZooError(f"the model's weights are {sorted(str(d).replace('torch.', '') for d in dtypes)}; export "
                              "a float32 model (model.float()): onnxruntime cannot run the graph of a half-precision "
                              "model that the exporter writes")
    check_out_path(path, overwrite)
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 18:
        raise CrystalZooError(f"opset = {opset!r}: the exporter writes ONNX opset 18 or newer")
    if example is not None and not isinstance(example, CrystalGraph):
        raise CrystalZooError(f"example must be a CrystalGraph (build_graph(…) or collate(…)), not a "
                              f"{type(example).__name__}")
    if example is None:
        example = _example_graph(model)
    wrapper = _OnGraphTensors(model).eval()
    example = _with_weights(example)
    args = tuple(getattr(example, name) for name in INPUT_NAMES)
    atoms, edges, crystals = Dim("atoms"), Dim("edges"), Dim("crystals")
    shapes = {"atom_fea": {0: atoms}, "bond_fea": {0: edges}, "src": {0: edges}, "dst": {0: edges},
              "crystal": {0: atoms}, "n_atoms": {0: crystals}, "edge_weight": {0: edges}}
    from .files import atomic_write

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            program = torch.onnx.export(wrapper, args, dynamic_shapes=shapes, input_names=list(INPUT_NAMES),
                                        output_names=["prediction"], opset_version=opset, dynamo=True, verbose=False)
    finally:
        model.train(was_training)
    atomic_write(path, lambda tmp: program.save(tmp))
    return Path(path)


def check_out_path(path: str | os.PathLike, overwrite: bool = False) -> None:
    """:class:`CrystalZooError` before any work when ``path`` cannot become the exported file:
    empty, not ending in ``.onnx``, an existing folder, an existing file (unless
    ``overwrite``), or inside something that is not a folder."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise CrystalZooError(f"the ONNX file name is empty ({path!r}); give one such as formation.onnx")
    path = Path(path)
    if path.is_dir():
        raise CrystalZooError(f"{path} is a folder; give a file name for the ONNX model, e.g. {path / 'model.onnx'}")
    if path.suffix != ".onnx":
        raise CrystalZooError(f"{path}: give a file name that ends in .onnx, such as model.onnx (this keeps an export "
                              "from replacing a model's weights or another file)")
    if os.path.lexists(path) and not overwrite:
        raise CrystalZooError(f"{path} exists; pass --overwrite (overwrite=True) to replace it, or choose another name")
    parent = next((p for p in path.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise CrystalZooError(f"{path}: {parent} is a file, not a folder; choose another place for the ONNX model")


def _example_graph(model: CrystalModel) -> CrystalGraph:
    """Three small crystals (CsCl-type NaCl, bcc Cs, diamond Si), built with the model's settings."""
    from pymatgen.core import Lattice, Structure

    from .graphs.building import build_arrays, collate

    nacl = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cs = Structure(Lattice.cubic(6.14), ["Cs", "Cs"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    silicon = Structure(Lattice.cubic(5.43), ["Si"] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]])
    return collate(build_arrays([nacl, cs, silicon], model.graph_settings, progress=False), model.graph_settings)
