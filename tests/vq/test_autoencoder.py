"""VQAutoencoder + CodebookMonitor train in Lightning; the OptVQ recipe runs in smoke mode."""
import json

import os
import subprocess
import sys
import warnings

import pytest

import pytorch_lightning as pl
import torch

from otlearn.data import DigitsDataModule
from otlearn.vq import CodebookMonitor, VQAutoencoder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_autoencoder_trains_and_monitor_reports(tmp_path):
    pl.seed_everything(0)
    model = VQAutoencoder(hidden=16, latent_dim=8, num_codes=64)
    monitor = CodebookMonitor(plot_dir=str(tmp_path))
    dm = DigitsDataModule(batch_size=128, augment=False)
    images = dm.test_dataset().base.images[:64]
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(model(images), images)
    trainer = pl.Trainer(max_epochs=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[monitor], num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, dm)
    model.eval()
    with torch.no_grad():
        after = torch.nn.functional.mse_loss(model(images), images)
    assert after < 0.6 * before
    last = monitor.history[-1]
    assert last["utilization"] > 0.9 and last["dead_codes"] <= 6 and 0 <= last["ot_nn_disagreement"] <= 1
    assert 1 <= last["perplexity"] <= 64
    assert (tmp_path / "usage_epoch004.png").exists()
    assert "codebook/quantization_mse" in trainer.callback_metrics
    assert "val/psnr" in trainer.callback_metrics


@pytest.mark.parametrize("config", ["digits", "patches"])
def test_optvq_recipe_smoke(tmp_path, config):
    extra = ["--arms", "[nn, vqpytorch, optvq_exact, otlearn]"] if config == "digits" else []
    proc = subprocess.run([sys.executable, "recipes/optvq_digits.py", "--config", f"configs/optvq/{config}.yaml", "--smoke", "true",
                           "--out_dir", str(tmp_path), *extra], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["K64"]) == ({"nn", "vqpytorch", "optvq_exact", "otlearn"} if config == "digits" else {"vqpytorch", "otlearn"})
    for arm in metrics["K64"].values():
        assert {"utilization", "train_utilization", "perplexity", "mse", "psnr", "ssim", "ms_per_step"} <= set(arm)
        assert 0 < arm["train_utilization"] <= 1
        assert 0 < arm["ssim"] <= 1 and arm["mse"] > 0
    assert (tmp_path / "reconstructions.png").stat().st_size > 0 and (tmp_path / "report.md").exists()
    report = (tmp_path / "report.md").read_text()
    assert "95% bootstrap interval over the 1 seeds" in report
    (tmp_path / "report.md").unlink()  # --report_only writes the same report from metrics.json, without training
    again = subprocess.run([sys.executable, "recipes/optvq_digits.py", "--config", f"configs/optvq/{config}.yaml", "--smoke", "true",
                            "--out_dir", str(tmp_path), "--report_only", "true", *extra], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "report.md").read_text() == report
    if config == "patches":  # the config's split, named with its photographs
        assert "split 'stereo' (train: motorcycle_left; test: motorcycle_right" in (tmp_path / "report.md").read_text()
