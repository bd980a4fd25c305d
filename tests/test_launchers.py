"""Every launcher starts N ranks that train together: ``otlearn fit --trainer.devices N
--trainer.strategy ddp`` on one machine (Lightning re-executes the command for ranks 1..N-1) and
``torchrun --nproc_per_node N``. ``srun`` is covered by tests/slurm. Each run is a subprocess in
its own session, killed as a group on timeout, so a hang fails instead of blocking pytest."""
import os
import signal
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
TINY = ["fit", "--config", os.path.join(ROOT, "configs/sela/tiny.yaml"), "--trainer.devices", "2",
        "--trainer.strategy", "ddp", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]


def _run(cmd, cwd, timeout=300):
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd[:3])} hung for {timeout}s:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]
    return out


def _label_round(cwd):
    ckpt = torch.load(os.path.join(cwd, "runs/sela_tiny/checkpoints/last.ckpt"), weights_only=False, map_location="cpu")
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("SelfLabelCallback"))
    return state["history"][0]


def _assert_two_ranks(out, cwd):
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in out and "GLOBAL_RANK: 1, MEMBER: 2/2" in out
    first = _label_round(cwd)
    assert first["world_size"] == 2
    rows = first["rows_per_rank"]
    assert len(rows) == 2 and min(rows) > 0 and abs(rows[0] - rows[1]) <= 1  # the label bank was sharded


def test_console_script_with_ddp_strategy_starts_both_ranks(tmp_path):
    out = _run([os.path.join(BIN, "otlearn"), *TINY], cwd=tmp_path)
    _assert_two_ranks(out, tmp_path)


def test_python_dash_m_with_ddp_strategy_starts_both_ranks(tmp_path):
    out = _run([sys.executable, "-m", "otlearn", *TINY], cwd=tmp_path)
    _assert_two_ranks(out, tmp_path)


def test_torchrun_starts_both_ranks(tmp_path):
    from tests._dist import free_port

    out = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(free_port()), "-m", "otlearn", *TINY], cwd=tmp_path)
    _assert_two_ranks(out, tmp_path)
