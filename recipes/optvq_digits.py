"""OptVQ on digits: a VQ-VAE with four quantizers compared in one run.

Arms (same encoder/decoder, same data, same seeds): ``nn`` nearest-neighbour STE; ``vqpytorch``
vector-quantize-pytorch's ``VectorQuantize`` with k-means init and dead-code restart (the anchor
users would pick); ``optvq_exact`` OptVQ's assignment (5 fixed Sinkhorn iterations, inverse
temperature 10, per-process statistics, argmax codes); ``otlearn`` :class:`OTVectorQuantizer`'s
recommended configuration (its defaults: otlearn's tolerance-based OT assignment with a relaxed code
marginal whose ρ anneals from 3 to 0.01 over the run, argmax codes, k-means init, EMA codebook, dead-code restarts); ``--rounding
balanced --b_penalty null``, ``--quantizer_kwargs '{b_penalty_end: null}'`` (constant ρ) or ``--codebook_update
gradient`` give other choices on otlearn's solver, and
``--quantizer_kwargs '{usage_decay: 0.8}'`` any other :class:`OTVectorQuantizer` keyword of that arm.
For K in ``num_codes`` and each seed, trains on the 70% split and evaluates on the held-out 30%
with batch-independent (nearest-neighbour) assignment: codebook utilisation and perplexity of the
test tokens, reconstruction MSE and PSNR; plus median milliseconds per training step.

Writes ``<out_dir>/metrics.json`` (``K256``/``K1024`` → arm → utilization, perplexity, mse, psnr,
ms_per_step; means over seeds; ``meta.per_seed`` every run), ``report.md`` (tables, and otlearn against
vector-quantize-pytorch paired by seed: mean difference and its 95% bootstrap interval over the seeds)
and ``reconstructions.png``. ``--report_only true`` rewrites ``report.md`` from an existing ``metrics.json``.

    python recipes/optvq_digits.py --config configs/optvq/digits.yaml [--smoke true]
    python recipes/optvq_digits.py --config configs/optvq/patches.yaml [--patch_images scenes]
"""
from __future__ import annotations

import inspect
import json
import math
import os
import statistics
import sys
import time
import warnings
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
from jsonargparse import ActionConfigFile, ArgumentParser
from torch import nn
from torch.utils.data import DataLoader

from otlearn.data import DigitsDataModule, PatchesDataModule
from otlearn.ot import SinkhornConvergenceWarning, SinkhornSolver, column_counts
from otlearn.vq import OPTVQ_SETTINGS, VQAutoencoder, psnr, usage_stats
from otlearn.vq.quantizer import RECOMMENDED_B_PENALTY, OTVectorQuantizer, default_solver

ARMS = ("nn", "vqpytorch", "optvq_exact", "otlearn")


class VQPytorchAdapter(nn.Module):
    """vector-quantize-pytorch's VectorQuantize on (B, C, H, W) latents → (quantized, indices, loss).

    Its own defaults otherwise, the rotation trick included (on for dim > 1 in vector-quantize-pytorch 1.32).
    """

    def __init__(self, dim: int, num_codes: int, decay: float = 0.8) -> None:
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize

        self.vq = VectorQuantize(dim=dim, codebook_size=num_codes, decay=decay, commitment_weight=1.0,
                                 kmeans_init=True, kmeans_iters=10, threshold_ema_dead_code=2, accept_image_fmap=True)

    def forward(self, x: torch.Tensor):
        quantized, indices, loss = self.vq(x)
        return quantized, indices, loss.sum()


def quantizer_default(name: str):
    """:class:`OTVectorQuantizer`'s default for ``name`` (the recommended configuration)."""
    return inspect.signature(OTVectorQuantizer).parameters[name].default


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description="OptVQ vs baselines on digits; writes a report.")
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_argument("--dataset", type=str, default="digits",
                        help="'digits' (8x8 grey) or 'patches' (16x16 RGB patches of skimage.data photographs, split by image)")
    parser.add_argument("--patch_images", type=str, default="scenes",
                        help="patches only: 'scenes' (test on other photographs) or 'stereo' (train/test: the two views of one scene)")
    parser.add_argument("--downsamples", type=int, default=1, help="stride-2 encoder stages (token grid = side / 2^n)")
    parser.add_argument("--num_codes", type=list[int], default=[256, 1024])
    parser.add_argument("--arms", type=list[str], default=list(ARMS))
    parser.add_argument("--seeds", type=list[int], default=[0, 1, 2])
    parser.add_argument("--max_epochs", type=int, default=120)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--latent_dim", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eps", type=float, default=0.1, help="OT ε on normalised distances (OptVQ's inverse temperature 10)")
    parser.add_argument("--solver", type=SinkhornSolver, default=default_solver(), help="the otlearn arm's solver")
    # the otlearn arm: OTVectorQuantizer's defaults unless overridden
    parser.add_argument("--rounding", type=str, default=quantizer_default("rounding"), help="otlearn arm: 'argmax' or 'balanced' codes")
    parser.add_argument("--codebook_update", type=str, default=quantizer_default("codebook_update"), help="otlearn arm: 'ema' or 'gradient'")
    parser.add_argument("--ema_decay", type=float, default=quantizer_default("ema_decay"))
    parser.add_argument("--b_penalty", type=Optional[float], default=RECOMMENDED_B_PENALTY,
                        help="otlearn arm: ρ of the relaxed code marginal (null: equal code masses)")
    parser.add_argument("--codebook_init", type=str, default=quantizer_default("codebook_init"),
                        help="otlearn arm: 'kmeans', 'normal' or 'uniform'")
    parser.add_argument("--quantizer_kwargs", type=dict, default={},
                        help="otlearn arm: further OTVectorQuantizer keywords, e.g. '{usage_decay: 0.8, dead_code_threshold: 0.25}' "
                             "(the options above have their own flags)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out_dir", type=str, default="runs/optvq_digits")
    parser.add_argument("--smoke", type=bool, default=False, help="K=64, 1 seed, 1 epoch: checks the pipeline only")
    parser.add_argument("--report_only", type=bool, default=False, help="rewrite report.md from <out_dir>/metrics.json; no training")
    return parser


def flag_quantizer_kwargs(cfg) -> dict:
    """The otlearn arm's :class:`OTVectorQuantizer` keywords that the recipe's own flags set."""
    return dict(eps=cfg.eps, rounding=cfg.rounding, codebook_update=cfg.codebook_update, ema_decay=cfg.ema_decay,
                b_penalty=cfg.b_penalty, codebook_init=cfg.codebook_init, solver=cfg.solver)


def extra_quantizer_kwargs(cfg) -> dict:
    """``cfg.quantizer_kwargs`` checked: :class:`OTVectorQuantizer` keywords that no flag of the recipe sets."""
    extra = dict(cfg.quantizer_kwargs or {})
    flags = set(flag_quantizer_kwargs(cfg))
    known = set(inspect.signature(OTVectorQuantizer).parameters) - {"num_codes", "dim", "assignment"}
    unknown = sorted(set(extra) - known)
    if unknown:
        raise ValueError(f"quantizer_kwargs: {unknown} are not OTVectorQuantizer keywords; expected some of {sorted(known - flags)}")
    flagged = sorted(set(extra) & flags)
    if flagged:
        raise ValueError(f"quantizer_kwargs: set {flagged} with the recipe's own flags (--{flagged[0]} …), not in quantizer_kwargs")
    return extra


def build_model(cfg, arm: str, k: int) -> VQAutoencoder:
    common = dict(in_chans=3 if cfg.dataset == "patches" else 1, hidden=cfg.hidden, latent_dim=cfg.latent_dim,
                  downsamples=cfg.downsamples, num_codes=k, lr=cfg.lr)
    if arm == "vqpytorch":
        return VQAutoencoder(**common, quantizer=VQPytorchAdapter(cfg.latent_dim, k))
    assignment = {"nn": "nn", "optvq_exact": "optvq", "otlearn": "ot"}[arm]
    kwargs = {"eps": cfg.eps, "normalize": "all"}
    if arm != "otlearn":
        kwargs.update(OPTVQ_SETTINGS)  # the baselines as published: gradient-trained N(0, 1) codebook
    else:
        kwargs.update(**flag_quantizer_kwargs(cfg), **extra_quantizer_kwargs(cfg))
    return VQAutoencoder(**common, assignment=assignment, quantizer_kwargs=kwargs)


@torch.no_grad()
def evaluate(model: VQAutoencoder, loader: DataLoader, k: int) -> dict[str, float]:
    model.eval()
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    ssim = StructuralSimilarityIndexMeasure(data_range=1.0, kernel_size=7)  # 7x7 Gaussian window: fits 8x8 digits
    counts = torch.zeros(k, dtype=torch.long)
    sq, n = 0.0, 0
    for batch in loader:
        images = batch["image"]
        quantized, indices, _ = model.quantize(images)
        counts += column_counts(indices.long(), k)
        recon = model.decoder(quantized)
        sq += float((recon - images).square().sum())
        n += images.numel()
        ssim.update(recon.clamp(0, 1), images.clamp(0, 1))
    mse = sq / n
    stats = usage_stats(counts)
    return {"utilization": stats["utilization"], "perplexity": stats["perplexity"], "mse": mse, "psnr": float(psnr(mse)),
            "ssim": float(ssim.compute())}


@torch.no_grad()
def utilization_on(model: VQAutoencoder, loader: DataLoader, k: int) -> float:
    """Share of the K codes that nearest-neighbour assignment gives at least one token of ``loader``."""
    model.eval()
    counts = torch.zeros(k, dtype=torch.long)
    for batch in loader:
        counts += column_counts(model.quantize(batch["image"])[1].long(), k)
    return usage_stats(counts)["utilization"]


def data_module(cfg, seed: int):
    """The reconstruction data: non-augmented (the images themselves are the targets)."""
    if cfg.dataset == "patches":
        return PatchesDataModule(batch_size=cfg.batch_size, images=cfg.patch_images, seed=seed)
    if cfg.dataset != "digits":
        raise ValueError(f"dataset must be 'digits' or 'patches', got {cfg.dataset!r}")
    return DigitsDataModule(batch_size=cfg.batch_size, seed=seed, augment=False)


def train_arm(cfg, arm: str, k: int, seed: int) -> tuple[VQAutoencoder, dict[str, float]]:
    pl.seed_everything(seed)
    model = build_model(cfg, arm, k)
    dm = data_module(cfg, seed)
    trainer = pl.Trainer(max_epochs=cfg.max_epochs, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, dm)
    metrics = evaluate(model, DataLoader(dm.test_dataset(), batch_size=512), k)
    metrics["train_utilization"] = utilization_on(model, DataLoader(dm.eval_train_dataset(), batch_size=512), k)
    steps = model.step_seconds[len(model.step_seconds) // 10:]  # skip warm-up steps (k-means init…)
    metrics["ms_per_step"] = 1e3 * statistics.median(steps)
    return model, metrics


def reconstructions_png(cfg, models: dict[str, VQAutoencoder], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = data_module(cfg, 0).test_dataset()
    images = torch.stack([test[i * (len(test) // 12)]["image"] for i in range(12)])
    rows = [("original", images)] + [(arm, m.eval()(images).detach().clamp(0, 1)) for arm, m in models.items()]
    fig, axes = plt.subplots(len(rows), 12, figsize=(12, 1.1 * len(rows)))
    for r, (name, imgs) in enumerate(rows):
        for c in range(12):
            shown = imgs[c].permute(1, 2, 0).numpy()
            axes[r, c].imshow(shown[..., 0] if shown.shape[-1] == 1 else shown, cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    cfg = parser.instantiate(parser.parse_args(argv))  # the solver option becomes a SinkhornSolver
    if cfg.smoke:
        cfg.num_codes, cfg.seeds, cfg.max_epochs = [64], cfg.seeds[:1], 1
    if cfg.report_only:
        with open(os.path.join(cfg.out_dir, "metrics.json")) as fh:
            results = json.load(fh)
        write_report(cfg, results)
        return results
    extra_quantizer_kwargs(cfg)  # a wrong keyword fails now, not after the arms before otlearn have trained
    torch.set_num_threads(cfg.threads)
    warnings.filterwarnings("ignore", category=SinkhornConvergenceWarning)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    os.makedirs(cfg.out_dir, exist_ok=True)
    t0 = time.perf_counter()
    results: dict = {}
    per_seed: dict = {}
    last_models: dict[str, VQAutoencoder] = {}
    anneal_steps: int | None = None  # the otlearn arm's ρ schedule length (set by the trainer)
    for k in cfg.num_codes:
        key = f"K{k}"
        results[key], per_seed[key] = {}, {}
        for arm in cfg.arms:
            runs = []
            for seed in cfg.seeds:
                model, metrics = train_arm(cfg, arm, k, seed)
                runs.append(metrics)
                print(f"{key} {arm} seed {seed}: " + json.dumps({m: round(v, 4) for m, v in metrics.items()}), flush=True)
            results[key][arm] = {m: float(np.mean([r[m] for r in runs])) for m in runs[0]}
            results[key][arm].update({f"{m}_std": float(np.std([r[m] for r in runs])) for m in runs[0]})
            per_seed[key][arm] = runs
            if k == max(cfg.num_codes):
                last_models[arm] = model
            if arm == "otlearn":
                anneal_steps = getattr(model.quantizer, "b_penalty_anneal_steps", None)
    reconstructions_png(cfg, last_models, os.path.join(cfg.out_dir, "reconstructions.png"))
    seconds = time.perf_counter() - t0
    results["meta"] = {"seeds": cfg.seeds, "max_epochs": cfg.max_epochs, "seconds": seconds, "smoke": cfg.smoke,
                       "otlearn_anneal_steps": anneal_steps, "per_seed": per_seed}
    with open(os.path.join(cfg.out_dir, "metrics.json"), "w") as fh:
        json.dump(results, fh, indent=2)
    write_report(cfg, results)
    print(open(os.path.join(cfg.out_dir, "report.md")).read())
    return results


def token_counts(cfg) -> tuple[int, int]:
    """(test, training) tokens the utilisations are measured on (images x token grid)."""
    dm = data_module(cfg, 0)

    def tokens(images) -> int:
        side = images[0]["image"].shape[-1] // (2 ** cfg.downsamples)
        return len(images) * side * side

    return tokens(dm.test_dataset()), tokens(dm.eval_train_dataset())


def paired_summary(diffs: list[float], reference: float, resamples: int = 10_000) -> str:
    """otlearn − vqpytorch MSE differences over seeds: their mean (also relative to the reference mean),
    and a 95% percentile-bootstrap interval of that mean (the seeds resampled, seeded generator)."""
    d = np.asarray(diffs, dtype=np.float64)
    means = d[np.random.default_rng(0).integers(0, len(d), size=(resamples, len(d)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (f"mean difference {d.mean():+.5f} ({100 * d.mean() / reference:+.1f}% of vector-quantize-pytorch's MSE), "
            f"95% bootstrap interval over the {len(d)} seeds [{low:+.5f}, {high:+.5f}]")


def write_report(cfg, results: dict) -> None:
    """``<out_dir>/report.md`` from ``results`` (the structure of ``metrics.json``): its K, arms, seeds, epochs and
    seconds come from ``results``, the data description from ``cfg``."""
    tokens, train_tokens = token_counts(cfg)
    meta = results["meta"]
    what = ("scikit-learn digits (8x8 grey; 1,257 train / 540 test images)" if cfg.dataset == "digits" else
            f"16x16 RGB patches of scikit-image photographs, split '{cfg.patch_images}' ({patch_split_text(cfg.patch_images)}; "
            "both stride 8)")
    lines = [f"# OptVQ on {cfg.dataset}", "",
             f"{what}. VQ-VAE (conv, token grid side / {2 ** cfg.downsamples}, tokens of dim {cfg.latent_dim}), "
             f"{meta['max_epochs']} epochs, seeds {meta['seeds']}; test utilisation over {tokens:,} test tokens with "
             f"nearest-neighbour assignment (batch-independent), train utilisation the same over the {train_tokens:,} "
             f"training tokens (seed mean); SSIM with a 7x7 Gaussian window; total {meta['seconds']:.0f} s."
             + (" **Smoke run: the numbers mean nothing.**" if meta["smoke"] else ""), "",
             f"otlearn arm: {otlearn_description(cfg, meta.get('otlearn_anneal_steps'))}.", ""]
    per_seed = meta["per_seed"]
    for key in per_seed:  # "K256", … in the order they ran
        k = int(key[1:])
        bound = 1 - math.exp(-tokens / k)
        lines += [f"## K = {k}", "", "| arm | utilization | train utilization | perplexity | MSE | PSNR dB | SSIM | ms/step |",
                  "|---|---|---|---|---|---|---|---|"]
        for arm, m in results[key].items():
            lines.append(f"| {arm} | {m['utilization']:.3f} ± {m['utilization_std']:.3f} | {m['train_utilization']:.3f} | {m['perplexity']:.0f} | "
                         f"{m['mse']:.5f} ± {m['mse_std']:.5f} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['ms_per_step']:.1f} |")
        lines.append("")
        if "otlearn" in per_seed[key] and "vqpytorch" in per_seed[key]:
            ours, ref = per_seed[key]["otlearn"], per_seed[key]["vqpytorch"]
            diffs = [o["mse"] - r["mse"] for o, r in zip(ours, ref)]
            lines += ["Paired by seed (otlearn − vqpytorch): MSE " + " / ".join(f"{d:+.5f}" for d in diffs)
                      + f"; otlearn lower on {sum(d <= 0 for d in diffs)} of {len(diffs)} seeds; "
                      + paired_summary(diffs, results[key]["vqpytorch"]["mse"]) + ".", "",
                      f"- test utilisation ≥ 0.99: otlearn {min(o['utilization'] for o in ours):.3f} (worst seed) → "
                      f"{'met' if min(o['utilization'] for o in ours) >= 0.99 else 'NOT met'}"
                      + (f" (with {tokens:,} test tokens for {k} codes, even a perfectly uniform code distribution "
                         f"hits at most about 1 − e^(−{tokens / k:.1f}) = {bound:.3f} of the codes; on the {train_tokens:,} "
                         f"training tokens otlearn uses {min(o['train_utilization'] for o in ours):.3f}, "
                         f"vector-quantize-pytorch {min(r['train_utilization'] for r in ref):.3f} (worst seeds))"
                         if bound < 0.995 else ""),
                      f"- test MSE no worse than vector-quantize-pytorch: mean {results[key]['otlearn']['mse']:.5f} vs "
                      f"{results[key]['vqpytorch']['mse']:.5f} → {'met' if results[key]['otlearn']['mse'] <= results[key]['vqpytorch']['mse'] else 'NOT met'}", ""]
    lines += ["![reconstructions](reconstructions.png)"]
    with open(os.path.join(cfg.out_dir, "report.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def patch_split_text(images: str) -> str:
    from otlearn.data.patches import SPLITS

    train, test = SPLITS[images]
    return f"train: {', '.join(train)}; test: {', '.join(test)}"


def otlearn_description(cfg, anneal_steps: int | None = None) -> str:
    """The otlearn arm's configuration in words; ``anneal_steps``: the ρ schedule's length the run used."""
    extra = extra_quantizer_kwargs(cfg)
    setting = {name: extra.get(name, quantizer_default(name)) for name in ("dead_code_threshold", "usage_decay", "restart_sampling")}
    schedule = {name: extra[name] for name in ("b_penalty_end", "b_penalty_anneal_steps") if name in extra}
    probe = OTVectorQuantizer(8, 4, b_penalty=cfg.b_penalty, rounding=cfg.rounding, **schedule)  # resolves the "auto"s
    if probe.b_penalty is None:
        relax = "hard equal code masses"
    elif probe.b_penalty_end is None:
        relax = f"relaxed code marginal, constant ρ = {probe.b_penalty:g}"
    else:
        steps = probe.b_penalty_anneal_steps or anneal_steps
        relax = (f"relaxed code marginal, ρ annealed log-linearly from {probe.b_penalty:g} to {probe.b_penalty_end:g} over "
                 + (f"{steps:,} training steps" if steps else "the run") + ("" if probe.b_penalty_anneal_steps else " (the whole run)"))
    restart = ("no dead-code restarts" if setting["dead_code_threshold"] is None else
               f"restart of codes whose EMA share of nearest-code picks falls below {setting['dead_code_threshold']:g} of "
               f"uniform (decay {setting['usage_decay']:g} per step), "
               + ("at distinct batch tokens drawn ∝ squared distance to their nearest code" if setting["restart_sampling"] == "distance"
                  else "at uniformly drawn batch tokens"))
    others = {name: value for name, value in extra.items() if name not in setting}
    return (f"OT assignment (ε = {cfg.eps:g} on normalised distances, tol {cfg.solver.tol:g}), {relax}, "
            f"{cfg.rounding} codes, {cfg.codebook_init} codebook init, {cfg.codebook_update} codebook "
            f"(decay {cfg.ema_decay:g}), {restart}"
            + ("".join(f", {name} = {value}" for name, value in others.items())))


if __name__ == "__main__":
    main(sys.argv[1:])
