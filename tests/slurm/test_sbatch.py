"""slurm/train.sbatch on a real single-node SLURM: a 2-process DDP fit, then preemption and resume.

The cluster is started and stopped by this module (tests/_slurm.py). If SLURM cannot start the
tests fail with the daemons' logs; they are never skipped silently.
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from otlearn.sela.callback import label_checksum
from tests._slurm import LocalSlurm

ROOT = Path(__file__).resolve().parents[2]
OTLEARN = str(Path(sys.executable).parent / "otlearn")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalSlurm(tmp_path_factory.mktemp("slurm")) as slurm:
        yield slurm


EPOCHS = 5


def _config(workdir: Path, signal_epoch: int | None) -> Path:
    """configs/sela/tiny.yaml, with the callback that preempts the job inside a label round when asked."""
    import yaml

    config = yaml.safe_load((ROOT / "configs/sela/tiny.yaml").read_text())
    if signal_epoch is not None:
        for callback in config["trainer"]["callbacks"]:
            if callback["class_path"] == "otlearn.sela.SelfLabelCallback":
                callback["class_path"] = "tests.slurm._signal.SignalDuringLabelRound"
                callback["init_args"]["signal_epoch"] = signal_epoch
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _submit(cluster, workdir: Path, extra: list[str], signal_epoch: int | None = None) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"CONFIG": str(_config(workdir, signal_epoch)), "OTLEARN": OTLEARN, "PYTHONPATH": str(ROOT)}
    return cluster.sbatch(["--ntasks=2", "--cpus-per-task=1", f"--chdir={workdir}", "--export=ALL",
                           str(ROOT / "slurm/train.sbatch"), "--trainer.accelerator", "cpu",
                           "--trainer.enable_progress_bar", "false", *extra], env=env, cwd=workdir)


def _log(workdir: Path, job_id: str) -> str:
    files = list(workdir.glob(f"slurm-*-{job_id}.out"))
    return files[0].read_text() if files else ""


def _final(workdir: Path) -> dict:
    return torch.load(workdir / "runs/sela_tiny/checkpoints/last.ckpt", weights_only=False)


def _sela_state(checkpoint: dict) -> dict:
    return next(v for k, v in checkpoint["callbacks"].items() if "SelfLabel" in k or "SignalDuringLabelRound" in k)


@pytest.fixture(scope="module")
def uninterrupted(cluster, tmp_path_factory):
    """The reference: the tiny config's 2-process fit, never interrupted."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    job = _submit(cluster, workdir, ["--trainer.max_epochs", str(EPOCHS)])
    try:
        cluster.wait(job, ("COMPLETED",), timeout=600)
    finally:
        print(_log(workdir, job)[-4000:])
    return workdir, job


def test_two_rank_fit_completes(uninterrupted):
    workdir, job = uninterrupted
    log = _log(workdir, job)
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1, MEMBER: 2/2" in log  # both ranks ran DDP
    metrics = (workdir / "runs/sela_tiny/logs/metrics.csv").read_text()
    assert "val/nmi" in metrics and "train/loss" in metrics and "sela/changed" in metrics
    assert [h["epoch"] for h in _sela_state(_final(workdir))["history"]] == list(range(EPOCHS))


def test_preempted_inside_a_label_round_resumes_to_the_uninterrupted_result(cluster, uninterrupted, tmp_path):
    """SIGUSR1 reaches the ranks inside the label round of epoch 2 (rank 1 waits in an all-reduce): the job
    checkpoints at the next batch end, requeues, resumes mid-epoch, and ends with exactly the labels and weights
    of the uninterrupted run."""
    workdir = tmp_path / "preempt"
    job = _submit(cluster, workdir, ["--trainer.max_epochs", str(EPOCHS)], signal_epoch=2)
    try:
        info = cluster.wait(job, ("COMPLETED",), timeout=900)
    finally:
        print(_log(workdir, job)[-6000:])
    log = _log(workdir, job)
    assert "inside the label round of epoch 2 (scancel exit 0" in log
    assert int(info.get("Restarts", "0")) >= 1, info  # it was requeued
    assert "SlurmRequeue: requeued SLURM job" in log  # the collective-safe path, not Lightning's handler
    hpc = sorted((workdir / "runs/sela_tiny").glob("hpc_ckpt_*.ckpt"))
    assert len(hpc) == 1, hpc
    saved = torch.load(hpc[0], weights_only=False)
    assert [h["epoch"] for h in _sela_state(saved)["history"]] == [0, 1, 2]  # the round finished before the save
    steps_per_epoch = int(_final(uninterrupted[0])["global_step"]) // EPOCHS
    assert saved["global_step"] % steps_per_epoch != 0  # a mid-epoch checkpoint
    restored = re.findall(r"restored label bank \((\d+), (\d+)\) \(checksum (\w+)\)", log)
    assert restored and restored[0][2] == label_checksum(_sela_state(saved)["labels"])
    final, reference = _final(workdir), _final(uninterrupted[0])
    assert final["global_step"] == reference["global_step"]
    ours, theirs = _sela_state(final), _sela_state(reference)
    assert torch.equal(ours["labels"], theirs["labels"])
    assert [h["epoch"] for h in ours["history"]] == list(range(EPOCHS))  # every epoch labelled exactly once
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(final["state_dict"][name], tensor), name
