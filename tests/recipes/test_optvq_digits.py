"""The OptVQ recipe: its utilisation over a split counts every code nearest to at least one token; its paired
summary's bootstrap interval is the exact bootstrap's; ``--quantizer_kwargs`` reaches the otlearn arm alone."""
import itertools
import re

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from otlearn.data import DigitsDataModule
from otlearn.vq import VQAutoencoder
from recipes.optvq_digits import build_model, build_parser, main, otlearn_description, paired_summary, utilization_on


def test_utilization_on_counts_codes_over_all_batches():
    pl.seed_everything(3)
    model = VQAutoencoder(hidden=8, latent_dim=4, num_codes=512, assignment="nn")
    dataset = DigitsDataModule(augment=False).eval_train_dataset()
    model.eval()
    with torch.no_grad():  # codes at random tokens of the training images: many, not all, are somebody's nearest
        images = torch.stack([dataset[i]["image"] for i in range(0, 1200, 40)])
        tokens = model.encoder(images).permute(0, 2, 3, 1).reshape(-1, 4)
        picks = torch.randint(len(tokens), (512,))
        model.quantizer.codebook.data.copy_(tokens[picks] + 0.05 * torch.randn(512, 4))
        indices = torch.cat([model.quantize(b["image"])[1].flatten() for b in DataLoader(dataset, batch_size=1000)])
    expected = indices.unique().numel() / 512
    assert 0 < expected < 1
    # batches of 100 images: codes first met in a later batch count too
    assert utilization_on(model, DataLoader(dataset, batch_size=100), 512) == expected
    one_batch = utilization_on(model, DataLoader(torch.utils.data.Subset(dataset, range(100)), batch_size=100), 512)
    assert 0 < one_batch < expected, (one_batch, expected)
    print(f"utilisation: all {expected:.3f}, first batch {one_batch:.3f}")


def test_paired_summary_interval_matches_the_exact_bootstrap():
    """With 4 seeds the bootstrap has 4^4 equally likely resamples: the sampled 95% interval of the mean
    must match that exact distribution's percentiles, and the relative difference its reference."""
    rng = np.random.default_rng(11)
    diffs = list(rng.normal(2e-4, 6e-4, size=4))
    text = paired_summary(diffs, reference=0.005)
    mean, rel, low, high = (float(v) for v in re.findall(r"[+-]\d+\.\d+", text)[:4])
    assert mean == float(f"{np.mean(diffs):+.5f}") and rel == float(f"{100 * np.mean(diffs) / 0.005:+.1f}")
    exact = np.array([np.mean(c) for c in itertools.product(diffs, repeat=4)])
    exact_low, exact_high = np.percentile(exact, [2.5, 97.5])
    assert abs(low - exact_low) <= 2e-5 and abs(high - exact_high) <= 2e-5, (low, high, exact_low, exact_high)
    assert low < mean < high
    same = paired_summary([3e-4] * 3, reference=0.005)  # no spread: the interval is the point
    assert "[+0.00030, +0.00030]" in same and "+6.0%" in same


def test_quantizer_kwargs_reach_the_otlearn_arm_and_its_description():
    """``--quantizer_kwargs`` sets further OTVectorQuantizer keywords on the otlearn arm only, the report's
    description names them, and a keyword the recipe has a flag for, or no keyword at all, is refused."""
    parser = build_parser()
    cfg = parser.instantiate(parser.parse_args(["--config", "configs/optvq/patches.yaml",
                                                "--quantizer_kwargs", "{usage_decay: 0.8, dead_code_threshold: 0.25, commitment: 0.5}"]))
    quantizer = build_model(cfg, "otlearn", 64).quantizer
    assert (quantizer.usage_decay, quantizer.dead_code_threshold, quantizer.commitment) == (0.8, 0.25, 0.5)
    baseline = build_model(cfg, "nn", 64).quantizer
    assert baseline.dead_code_threshold is None and baseline.commitment == 1.0  # the baselines stay as published
    text = otlearn_description(cfg)
    assert "below 0.25 of uniform (decay 0.8 per step)" in text and text.endswith("commitment = 0.5")
    default = parser.instantiate(parser.parse_args(["--config", "configs/optvq/patches.yaml"]))
    assert "below 0.1 of uniform (decay 0.9 per step)" in otlearn_description(default)
    for bad, message in [("{eps: 0.2}", "own flags"), ("{ema: 0.2}", "not OTVectorQuantizer keywords")]:
        wrong = parser.instantiate(parser.parse_args(["--config", "configs/optvq/patches.yaml", "--quantizer_kwargs", bad]))
        with pytest.raises(ValueError, match=message):
            build_model(wrong, "otlearn", 64)
    with pytest.raises(ValueError, match="not OTVectorQuantizer keywords"):  # before any arm trains
        main(["--config", "configs/optvq/patches.yaml", "--out_dir", "/nonexistent/never-written", "--quantizer_kwargs", "{ema: 0.2}"])
