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


def test_fit_tiny_vq_on_two_ddp_spawn_processes(tmp_path):
    """ddp_spawn pickles the trainer, and with it the CLI, into each worker: the CLI class must pickle by name."""
    fit = _otlearn(["fit", "--config", os.path.join(ROOT, "configs/vq/tiny.yaml"), "--trainer.max_epochs", "1",
                    "--trainer.enable_progress_bar", "false", "--trainer.devices", "2", "--trainer.strategy", "ddp_spawn"],
                   cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "max_epochs=1` reached" in fit.stderr + fit.stdout
    assert (tmp_path / "runs/vq_tiny/checkpoints/last.ckpt").exists()


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


def test_recipe_after_a_plain_non_editable_install(tmp_path):
    """`pip install .` (not editable) puts only the package in site-packages: `otlearn recipe` then finds the
    recipes of a checkout in the current folder, or says in one line where they are."""
    import shutil

    target = tmp_path / "site"
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "*.egg-info", "__pycache__", "build"))
    built = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                            "--quiet", "--target", str(target), str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    assert (target / "otlearn" / "cli.py").exists() and not (target / "recipes").exists()
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("OTLEARN_RECIPES", None)
    # -P: the current folder is not put on sys.path, so the installed copy runs even inside the checkout
    command = [sys.executable, "-P", "-c", "import sys, otlearn; from otlearn.cli import main; print(otlearn.__file__); "
               "main(sys.argv[1:])", "recipe"]
    elsewhere = subprocess.run(command + ["sela_digits"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert elsewhere.returncode == 2
    message = elsewhere.stderr.strip().splitlines()
    assert len(message) == 1 and "source checkout" in message[0], elsewhere.stderr
    listed = subprocess.run(command + ["--help"], capture_output=True, text=True, cwd=source, env=env, timeout=300)
    assert listed.returncode == 0 and "sela_digits" in listed.stdout and "optvq_digits" in listed.stdout, listed.stderr
    ran = subprocess.run(command + ["sela_digits", "--help"], capture_output=True, text=True, cwd=source, env=env, timeout=300)
    assert ran.returncode == 0 and "--seeds" in ran.stdout, ran.stderr[-2000:]
    assert ran.stdout.splitlines()[0].startswith(str(target))  # the installed copy ran, not the checkout


def test_every_shipped_config_parses():
    """Each YAML of configs/ parses with the command or recipe it belongs to (a renamed option fails here)."""
    import glob

    import yaml

    cli_configs, recipe_configs = [], []
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*", "*.yaml"))):
        with open(path) as fh:
            (cli_configs if "trainer" in yaml.safe_load(fh) else recipe_configs).append(path)
    assert len(cli_configs) >= 7 and len(recipe_configs) >= 5
    script = (
        "import sys, contextlib, io\nfrom otlearn.cli import main\nfor path in sys.argv[1:]:\n"
        "    out = io.StringIO()\n    try:\n        with contextlib.redirect_stdout(out):\n"
        "            main(['fit', '--config', path, '--print_config'])\n    except SystemExit as stop:\n"
        "        assert stop.code in (0, None), (path, stop.code)\n    assert 'class_path' in out.getvalue(), path\n"
        "    print('parsed', path)\n"
    )
    run = subprocess.run([sys.executable, "-c", script, *cli_configs], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("parsed") == len(cli_configs)
    recipes = {"sela": "recipes.sela_digits", "optvq": "recipes.optvq_digits", "point2mask": "recipes.point2mask_shapes"}
    import importlib

    for path in recipe_configs:
        parser = importlib.import_module(recipes[os.path.basename(os.path.dirname(path))]).build_parser()
        cfg = parser.instantiate(parser.parse_args(["--config", path]))
        assert cfg is not None


def test_every_subcommand_adds_the_teardown_and_fit_under_slurm_the_requeue_each_once(tmp_path, monkeypatch):
    import pytorch_lightning as pl

    from otlearn.lightning_cli import add_run_callbacks
    from otlearn.requeue import SlurmRequeue
    from otlearn.teardown import ReleaseProcessGroupAtExit

    def kinds(trainer):
        return [type(c) for c in trainer.callbacks if isinstance(c, (ReleaseProcessGroupAtExit, SlurmRequeue))]

    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    for subcommand in ("fit", "validate", "test", "predict"):
        trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
        add_run_callbacks(trainer, subcommand)
        add_run_callbacks(trainer, subcommand)
        assert kinds(trainer) == [ReleaseProcessGroupAtExit], subcommand

    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "otlearn_job")
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    add_run_callbacks(trainer, "fit")
    add_run_callbacks(trainer, "fit")
    assert sorted(k.__name__ for k in kinds(trainer)) == ["ReleaseProcessGroupAtExit", "SlurmRequeue"]
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    add_run_callbacks(trainer, "test")
    assert kinds(trainer) == [ReleaseProcessGroupAtExit]
