"""The ``otlearn`` command.

    otlearn fit      --config configs/sela/tiny.yaml      # LightningCLI: train any otlearn model
    otlearn validate --config ... --ckpt_path last.ckpt
    otlearn test     --config ... --ckpt_path last.ckpt
    otlearn eval     --checkpoint runs/.../last.ckpt --data digits [--out metrics.json]
    otlearn recipe   sela_digits --config configs/sela/digits.yaml

``fit/validate/test`` are Lightning's CLI (jsonargparse): the config names ``model.class_path``,
``data.class_path`` and the trainer (callbacks included). ``eval`` scores a trained checkpoint:
kNN and linear probe of its features, NMI/ARI/accuracy of a clustering head, on a dataset's
held-out split. ``recipe`` runs a script of ``recipes/`` with the remaining arguments.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
import sys

SUBCOMMANDS = ("fit", "validate", "test", "predict")
RECIPES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
NO_RECIPES = ("recipes ship with otlearn's source checkout, not with the installed package: run `otlearn recipe` "
              "inside a clone of otlearn, or set OTLEARN_RECIPES to its recipes/ folder")


def recipes_dir() -> str | None:
    """Where the recipes are: ``$OTLEARN_RECIPES``, the source checkout this package runs from
    (editable install), or ``./recipes`` of a checkout in the current folder; ``None`` if nowhere."""
    candidates = [os.environ.get("OTLEARN_RECIPES"), RECIPES_DIR, os.path.join(os.getcwd(), "recipes")]
    for folder in candidates:
        if folder and os.path.isfile(os.path.join(folder, "sela_digits.py")):
            return folder
    return None


def _error(message: str) -> None:
    print(f"otlearn: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _relaunchable_argv0() -> str:
    """What ``sys.argv[0]`` must be for Lightning's DDP launcher to start the other ranks.

    With ``--trainer.strategy ddp`` on one machine (no SLURM, no torchrun), rank 0 re-executes
    ``python -m <__main__'s module>`` when there is one (``python -m otlearn``), else
    ``python <abspath(sys.argv[0])>``: the ``otlearn`` console script, never a bare "otlearn",
    which would resolve against the current folder.
    """
    import __main__
    import shutil

    argv0 = sys.argv[0] if sys.argv else ""
    if getattr(__main__, "__spec__", None) is not None:
        return argv0  # Lightning relaunches the module; argv[0] is not used
    if argv0 and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    beside = os.path.join(os.path.dirname(sys.executable), "otlearn")
    return beside if os.path.isfile(beside) else (shutil.which("otlearn") or argv0)


def lightning_main(argv: list[str]) -> None:
    """``otlearn fit|validate|test|predict``: LightningCLI over every LightningModule/DataModule."""
    from pytorch_lightning import LightningDataModule, LightningModule

    from otlearn.lightning_cli import OtlearnCLI

    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv) and not os.path.isfile(argv[i + 1]):
            _error(f"config file not found: {argv[i + 1]} (see configs/ for the shipped ones)")
    sys.argv = [_relaunchable_argv0()] + argv

    try:
        OtlearnCLI(
            LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
        )
    except (FileNotFoundError, ValueError) as err:
        # a data path in the config that does not exist: jsonargparse wraps the loader's error
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, FileNotFoundError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        _error(str(cause))


def eval_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="otlearn eval",
        description="Evaluate a trained checkpoint: kNN and linear probe of its features and the clustering "
                    "metrics (NMI, ARI, Hungarian accuracy) of one head, on a dataset's held-out split.",
    )
    parser.add_argument("--checkpoint", required=True, help="Lightning checkpoint (.ckpt) of the model")
    parser.add_argument("--model_class", default="otlearn.sela.SelfLabeling",
                        help="import path of the LightningModule class (default: %(default)s)")
    parser.add_argument("--data", choices=("digits", "cifar10", "folder"), default="digits",
                        help="dataset: digits (offline), cifar10 or an image folder at --root")
    parser.add_argument("--root", default=None, help="data path for cifar10 / folder")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--head", type=int, default=0, help="clustering head to score (-1: none)")
    parser.add_argument("--knn_k", type=int, default=20)
    parser.add_argument("--knn_temperature", type=float, default=0.07)
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--out", default=None, help="write the metrics as JSON here")
    args = parser.parse_args(argv)

    from torch.utils.data import DataLoader

    if not os.path.isfile(args.checkpoint):
        _error(f"checkpoint not found: {args.checkpoint}")
    module_path, _, class_name = args.model_class.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_path), class_name)
    except (ImportError, AttributeError, ValueError):
        _error(f"cannot import model class {args.model_class!r}")
    model = cls.load_from_checkpoint(args.checkpoint, map_location="cpu", weights_only=False)
    if args.data == "digits":
        from otlearn.data import DigitsDataModule

        dm = DigitsDataModule()
    else:
        from otlearn.data import ImageDataModule

        if not args.root:
            _error(f"--data {args.data} needs --root, the folder that holds the data")
        try:
            dm = ImageDataModule(kind="cifar10" if args.data == "cifar10" else "folder", root=args.root,
                                 image_size=args.image_size, num_workers=0)
        except FileNotFoundError as err:
            _error(str(err))
    from otlearn.eval import evaluate_representation

    result = evaluate_representation(
        model, DataLoader(dm.eval_train_dataset(), batch_size=args.batch_size),
        DataLoader(dm.test_dataset(), batch_size=args.batch_size), knn_k=args.knn_k,
        knn_temperature=args.knn_temperature, head=None if args.head < 0 else args.head,
    )
    metrics = {k: float(v) for k, v in result.items() if k in ("nmi", "ari", "acc", "knn", "linear")}
    metrics["checkpoint"] = os.path.abspath(args.checkpoint)
    print(json.dumps(metrics, indent=2))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(metrics, fh, indent=2)


def recipe_main(argv: list[str]) -> None:
    folder = recipes_dir()
    if folder is None:
        _error(NO_RECIPES)
    available = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_"))
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: otlearn recipe NAME [recipe arguments]\n\nrecipes: " + ", ".join(available))
        return
    name = argv[0]
    path = os.path.join(folder, f"{name}.py")
    if not os.path.isfile(path):
        _error(f"unknown recipe {name!r}; available: {', '.join(available)}")
    checkout = os.path.dirname(os.path.abspath(folder))
    if checkout not in sys.path:  # recipes import each other and benchmarks' helpers from the checkout
        sys.path.insert(0, checkout)
    sys.argv = [path] + argv[1:]
    runpy.run_path(path, run_name="__main__")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = (
        "usage: otlearn {fit,validate,test,predict} --config CONFIG.yaml [overrides]\n"
        "       otlearn eval --checkpoint CKPT [--data digits|cifar10|folder] [--out metrics.json]\n"
        "       otlearn recipe NAME [recipe arguments]\n\n"
        "Train, evaluate and run the experiments of otlearn. Configs live in configs/; `otlearn fit --help` lists\n"
        "every trainer option, `otlearn fit --config configs/sela/tiny.yaml --print_config` shows a full config."
    )
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return
    command, rest = argv[0], argv[1:]
    if command in SUBCOMMANDS:
        try:
            lightning_main([command] + rest)
        finally:
            from otlearn.comm import release_process_group

            release_process_group()
    elif command == "eval":
        eval_main(rest)
    elif command == "recipe":
        recipe_main(rest)
    else:
        print(usage, file=sys.stderr)
        _error(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
