"""The modality-gap picture: a 2-D UMAP (McInnes et al. 2018) of image and text embeddings, saved as PNG.

Drawn on a bare matplotlib ``Figure`` with the Agg canvas: no pyplot, no global backend state, safe in workers.

Shape legend: N = images, T = texts, D = embedding dim, P = plotted points (images then texts).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

MIN_POINTS = 4  # per modality; UMAP's neighbour graph is meaningless below that


def _subsample(features_ND: torch.Tensor, max_points: int, rng: np.random.Generator) -> np.ndarray:
    x_ND = F.normalize(features_ND.float(), dim=-1).cpu().numpy()
    if len(x_ND) > max_points:
        x_ND = x_ND[np.sort(rng.choice(len(x_ND), size=max_points, replace=False))]
    return x_ND


def umap_2d(x_PD: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """UMAP to 2-D with cosine distance; seeded, hence single-threaded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImportWarning)  # umap announces that TensorFlow (ParametricUMAP) is absent
        import umap
    n_neighbors = min(15, len(x_PD) - 1)
    reducer = umap.UMAP(n_neighbors=n_neighbors, metric="cosine", random_state=seed, n_jobs=1,
                        init="spectral" if len(x_PD) > 2 * n_neighbors else "random")
    with threadpool_limits(limits=1, user_api="blas"):  # numpy's BLAS threads would fight torch's OpenMP ones
        return reducer.fit_transform(x_PD)


def plot_modality_umap(
    image_features_ND: torch.Tensor,
    text_features_TD: torch.Tensor,
    path: Path,
    *,
    max_points: int = 1000,
    seed: int = 0,
    title: str = "",
) -> Path:
    """Write a UMAP scatter of (at most ``max_points`` per modality, seeded subsample) images and texts to ``path``."""
    if min(len(image_features_ND), len(text_features_TD), max_points) < MIN_POINTS:
        raise ValueError(f"UMAP plot needs >= {MIN_POINTS} images, texts and max_points; got "
                         f"{len(image_features_ND)}, {len(text_features_TD)} and {max_points}")
    rng = np.random.default_rng(seed)
    images_ND = _subsample(image_features_ND, max_points, rng)
    texts_TD = _subsample(text_features_TD, max_points, rng)
    xy_P2 = umap_2d(np.concatenate([images_ND, texts_TD]), seed=seed)
    # Imported here: matplotlib costs ~0.35 s CPU, and the flow process imports this module without plotting.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(*xy_P2[: len(images_ND)].T, s=4, alpha=0.6, label=f"images ({len(images_ND)})")
    ax.scatter(*xy_P2[len(images_ND) :].T, s=4, alpha=0.6, label=f"texts ({len(texts_TD)})")
    ax.set(title=title or "image and text embeddings (UMAP)", xticks=[], yticks=[])
    ax.legend(loc="best", markerscale=3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
