"""Training under torchrun with 2 CPU processes (gloo) against one process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(prefix, batch, freeze, tmp_path):
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
          "--master_port", str(_free_port()), str(HERE / "ddp_train.py"), str(prefix), str(batch), freeze], tmp_path)


@pytest.mark.slow
def test_two_processes_match_one_process_with_twice_the_batch(tmp_path):
    """With BatchNorm frozen (freeze=4), 2 processes × batch 20 take exactly the steps of
    1 process × batch 40: the same weights and the same training loss."""
    _run([sys.executable, str(HERE / "ddp_train.py"), str(tmp_path / "single"), "40", "4"], tmp_path)
    _torchrun(tmp_path / "ddp", 20, "4", tmp_path)
    single = torch.load(tmp_path / "single.0.pt", weights_only=True)
    for rank in (0, 1):
        ddp = torch.load(tmp_path / f"ddp.{rank}.pt", weights_only=True)
        for name, value in single["state"].items():
            torch.testing.assert_close(ddp["state"][name], value, rtol=1e-4, atol=1e-6, msg=name)
        assert ddp["train_loss"] == pytest.approx(single["train_loss"], rel=1e-4)


@pytest.mark.slow
def test_ranks_stay_in_sync_when_everything_trains(tmp_path):
    _torchrun(tmp_path / "full", 20, "none", tmp_path)
    a = torch.load(tmp_path / "full.0.pt", weights_only=True)["state"]
    b = torch.load(tmp_path / "full.1.pt", weights_only=True)["state"]
    for name in a:
        assert torch.equal(a[name], b[name]), name
