#!/usr/bin/env bash
# Install crystalzoo's wheel into a venv that already holds torch 2.13.0 (CPU build) and numpy 2,
# as a downstream project would, and check that neither is changed; then use it from outside
# the repository; then run every Python block of README.md and docs/*.md against that install,
# from a folder outside the repository (scripts/run_doc_examples.py --installed). Run by .ci/run;
# any Python 3.10+ with pip and the package registry will do.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
. "$work/venv/bin/activate"
pip install -q "torch==2.13.0" "numpy>=2"
versions='import torch, numpy; print(f"torch {torch.__version__}, numpy {numpy.__version__}")'
before=$(python -c "$versions")
pip wheel -q --no-deps -w "$work/dist" "$root"
pip install -q "$work"/dist/crystalzoo-*.whl
after=$(python -c "$versions")
echo "downstream venv before installing crystalzoo: $before; after: $after"
if [ "$before" != "$after" ]; then
    echo "FAILED: installing crystalzoo changed torch or numpy" >&2
    exit 1
fi
cd "$work"
crystalzoo predict --model formation "$root/tests/data/cifs/1000041.cif"
python -c "import sys, crystalzoo; crystalzoo.load_model('formation'); assert 'dgl' not in sys.modules; print('no dgl imported')"
echo "downstream install: passed"
echo "== the documentation's examples, against the installed wheel, outside the repository"
wheel=$(ls "$work"/dist/crystalzoo-*.whl)
pip install -q "$wheel[ase,sklearn,export]"
python "$root/scripts/run_doc_examples.py" --installed
