"""The otlearn command: LightningCLI fit on the tiny config, eval of its checkpoint, clear errors."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _otlearn(args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "otlearn.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_fit_then_eval_tiny_sela(tmp_path):
    fit = _otlearn(["fit", "--config", os.path.join(ROOT, "configs/sela/tiny.yaml"), "--trainer.max_epochs", "2",
                    "--trainer.enable_progress_bar", "false"], cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = tmp_path / "runs/sela_tiny/checkpoints/last.ckpt"
    assert ckpt.exists()
    out = tmp_path / "metrics.json"
    ev = _otlearn(["eval", "--checkpoint", str(ckpt), "--out", str(out)], cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert set(metrics) >= {"nmi", "ari", "acc", "knn", "linear"}
    assert 0 <= metrics["nmi"] <= 1 and metrics["knn"] > 0.3


def test_fit_tiny_vq(tmp_path):
    fit = _otlearn(["fit", "--config", os.path.join(ROOT, "configs/vq/tiny.yaml"), "--trainer.max_epochs", "1",
                    "--trainer.enable_progress_bar", "false"], cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert (tmp_path / "runs/vq_tiny/checkpoints/last.ckpt").exists()
    assert (tmp_path / "runs/vq_tiny/usage/usage_epoch000.png").exists()


def test_clear_errors(tmp_path):
    for args, message in [
        (["fit", "--config", "missing.yaml"], "config file not found: missing.yaml"),
        (["eval", "--checkpoint", "missing.ckpt"], "checkpoint not found"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["recipe", "nope"], "unknown recipe 'nope'"),
        (["fit", "--config", os.path.join(ROOT, "configs/sela/cifar10_resnet18.yaml"), "--trainer.accelerator", "cpu",
          "--trainer.precision", "32", "--data.init_args.root", str(tmp_path / "nowhere")], "CIFAR-10 not found"),
        (["fit", "--config", os.path.join(ROOT, "configs/sela/imagenet_resnet50.yaml"), "--trainer.accelerator", "cpu",
          "--trainer.devices", "1", "--trainer.strategy", "auto", "--trainer.precision", "32",
          "--trainer.sync_batchnorm", "false"], "image folder not found"),
    ]:
        proc = _otlearn(args, cwd=tmp_path, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    helped = _otlearn(["--help"], cwd=tmp_path, timeout=120)
    assert helped.returncode == 0 and "otlearn eval --checkpoint" in helped.stdout


def test_fit_tiny_point2mask(tmp_path):
    fit = _otlearn(["fit", "--config", os.path.join(ROOT, "configs/point2mask/tiny.yaml"), "--trainer.max_epochs", "1",
                    "--trainer.enable_progress_bar", "false"], cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert (tmp_path / "runs/point2mask_tiny/checkpoints/last.ckpt").exists()
    header = (tmp_path / "runs/point2mask_tiny/logs/metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/pq", "val/pq_th", "val/pq_st", "train/loss_boundary"} <= set(header)
