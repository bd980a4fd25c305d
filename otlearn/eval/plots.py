"""Report figures (matplotlib, headless): confusion matrix, 2-D embedding, curves, cluster sizes."""
from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402


def confusion_matrix_plot(pred: np.ndarray, target: np.ndarray, path: str, title: str = "") -> None:
    """Clusters (rows, reordered by the Hungarian matching) against true classes (columns)."""
    pred, target = np.asarray(pred), np.asarray(target)
    counts = np.zeros((pred.max() + 1, target.max() + 1), dtype=int)
    np.add.at(counts, (pred, target), 1)
    rows, cols = linear_sum_assignment(-counts)
    order = list(rows[np.argsort(cols)]) + [r for r in range(counts.shape[0]) if r not in rows]
    counts = counts[order]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = ax.imshow(counts, cmap="Blues")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            if counts[i, j]:
                ax.text(j, i, counts[i, j], ha="center", va="center", fontsize=7,
                        color="white" if counts[i, j] > counts.max() / 2 else "black")
    ax.set_xlabel("true class")
    ax.set_ylabel("cluster (matched order)")
    ax.set_yticks(range(len(order)), [str(o) for o in order])
    ax.set_xticks(range(counts.shape[1]))
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def embedding_plot(features: np.ndarray, target: np.ndarray, path: str, title: str = "", seed: int = 0) -> None:
    """t-SNE of features coloured by true class."""
    from sklearn.manifold import TSNE

    xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30).fit_transform(np.asarray(features))
    fig, ax = plt.subplots(figsize=(5, 5))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=target, cmap="tab10", s=6)
    ax.legend(*sc.legend_elements(), fontsize=6, loc="best", title="class")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str, title: str = "",
                ylabel: str = "") -> None:
    """One line per ``name -> (x, y)``."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o" if len(x) < 30 else None, ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cluster_sizes_plot(epochs: Sequence[int], sizes: Sequence[Sequence[int]], changed: Sequence[float],
                       path: str, title: str = "") -> None:
    """Sorted cluster sizes at each label round (heat map) and the fraction of labels changed."""
    sizes = np.sort(np.asarray(sizes), axis=1)[:, ::-1]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
    im = ax0.imshow(sizes.T, aspect="auto", cmap="viridis",
                    extent=(min(epochs) - 0.5, max(epochs) + 0.5, sizes.shape[1] - 0.5, -0.5))
    ax0.set_xlabel("label round (epoch)")
    ax0.set_ylabel("cluster (sorted by size)")
    ax0.set_title("cluster sizes per round")
    fig.colorbar(im, ax=ax0)
    ax1.plot(epochs, sizes.min(1), label="smallest")
    ax1.plot(epochs, sizes.max(1), label="largest")
    ax1.set_xlabel("label round (epoch)")
    ax1.set_ylabel("samples")
    ax2 = ax1.twinx()
    ax2.plot(epochs, changed, color="gray", ls="--", label="changed fraction")
    ax2.set_ylabel("fraction of labels changed")
    ax1.legend(loc="center right", fontsize=7)
    ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
