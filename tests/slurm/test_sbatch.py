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


def _submit(cluster, workdir: Path, extra: list[str]) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"CONFIG": str(ROOT / "configs/sela/tiny.yaml"), "OTLEARN": OTLEARN, "PYTHONPATH": str(ROOT)}
    return cluster.sbatch(["--ntasks=2", "--cpus-per-task=1", f"--chdir={workdir}", "--export=ALL",
                           str(ROOT / "slurm/train.sbatch"), "--trainer.accelerator", "cpu",
                           "--trainer.enable_progress_bar", "false", *extra], env=env, cwd=workdir)


def _log(workdir: Path, job_id: str) -> str:
    files = list(workdir.glob(f"slurm-*-{job_id}.out"))
    return files[0].read_text() if files else ""


def test_two_rank_fit_completes(cluster, tmp_path):
    workdir = tmp_path / "fit"
    job = _submit(cluster, workdir, ["--trainer.max_epochs", "2"])
    try:
        cluster.wait(job, ("COMPLETED",), timeout=600)
    finally:
        print(_log(workdir, job)[-4000:])
    log = _log(workdir, job)
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1, MEMBER: 2/2" in log  # both ranks ran DDP
    ckpt = workdir / "runs/sela_tiny/checkpoints/last.ckpt"
    assert ckpt.exists()
    metrics = (workdir / "runs/sela_tiny/logs/metrics.csv").read_text()
    assert "val/nmi" in metrics and "train/loss" in metrics and "sela/changed" in metrics
    state = next(v for k, v in torch.load(ckpt, weights_only=False)["callbacks"].items() if k.startswith("SelfLabelCallback"))
    assert [h["epoch"] for h in state["history"]] == [0, 1]


def test_preempted_job_requeues_and_resumes_with_its_labels(cluster, tmp_path):
    workdir = tmp_path / "preempt"
    epochs = 30
    job = _submit(cluster, workdir, ["--trainer.max_epochs", str(epochs)])
    last = workdir / "runs/sela_tiny/checkpoints/last.ckpt"
    deadline = time.time() + 600
    while not last.exists() and time.time() < deadline:  # wait until training is under way
        assert cluster.job(job).get("JobState") in ("PENDING", "RUNNING"), cluster.job(job)
        time.sleep(1)
    assert last.exists(), _log(workdir, job)[-4000:]
    signalled = subprocess.run(["scancel", "--signal=USR1", job], env=cluster.env, capture_output=True, text=True)
    assert signalled.returncode == 0, (signalled.stderr, cluster.job(job))
    try:
        info = cluster.wait(job, ("COMPLETED",), timeout=900)
    finally:
        print(_log(workdir, job)[-6000:])
    assert int(info.get("Restarts", "0")) >= 1, info  # it was requeued
    hpc = sorted((workdir / "runs/sela_tiny").glob("hpc_ckpt_*.ckpt"))
    assert hpc, "no HPC checkpoint was written on SIGUSR1"
    saved = next(v for k, v in torch.load(hpc[0], weights_only=False)["callbacks"].items() if k.startswith("SelfLabelCallback"))
    log = _log(workdir, job)
    assert "SlurmRequeue: requeued SLURM job" in log  # the collective-safe path, not Lightning's handler
    restored = re.findall(r"restored label bank \((\d+), (\d+)\) \(checksum (\w+)\), label rounds done at epochs (\[[\d, ]*\])", log)
    assert restored, "the requeued run did not restore the label bank"
    assert restored[0][2] == label_checksum(saved["labels"])  # the labels saved before the signal
    assert restored[0][3] == str([h["epoch"] for h in saved["history"]])  # and the schedule position
    final = next(v for k, v in torch.load(last, weights_only=False)["callbacks"].items() if k.startswith("SelfLabelCallback"))
    assert [h["epoch"] for h in final["history"]] == list(range(epochs))  # every epoch labelled exactly once across the restart
