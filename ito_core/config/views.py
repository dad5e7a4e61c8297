"""The cheaper training views of the ``ito`` group: what each view runs through the image tower, and their checks.

``ito.patch_dropout`` drops that share of each view's patch tokens at random, the CLS token always kept (FLIP, Li et
al. 2023, arXiv 2212.00794; OpenCLIP's ``patch_dropout``); ``ito.second_view_size`` runs image views 2..M at a lower
resolution (the multi-crop recipe, Caron et al. 2020, arXiv 2006.09882). Both act in training only: eval and the
stripped model see every patch at ``model.image_size``. The model (``ito_core.models``) and the FLOP count
(``ito_core.flops``) both read the token counts from here, so they cannot disagree.
"""

from __future__ import annotations

from ito_core.config.schema import ItoConfig, ModelConfig, RunConfig, fuses
from ito_core.methods import registry


def view_sizes(model: ModelConfig, ito: ItoConfig) -> list[int]:
    """Pixel side of each of the M training views: view 1 at ``model.image_size``, the others at
    ``ito.second_view_size`` when set."""
    second = ito.second_view_size or model.image_size
    return [model.image_size] + [second] * (ito.images - 1)


def kept_patches(patches: int, patch_dropout: float) -> int:
    """Patch tokens a training view keeps out of ``patches``: at least one, as OpenCLIP's ``PatchDropout``."""
    return max(1, int(patches * (1 - patch_dropout)))


def check_views(cfg: RunConfig) -> None:
    """``ito.patch_dropout`` and ``ito.second_view_size``; a bad value raises ``ValueError`` naming the key and the
    fix."""
    ito, m = cfg.ito, cfg.model
    p, size = ito.patch_dropout, ito.second_view_size
    if not 0 <= p < 1:
        raise ValueError(f"config ito.patch_dropout: {p} is not in [0, 1); use the share of patch tokens to drop, "
                         "e.g. 0.5 (FLIP), or 0 for none")
    if size and not (size % m.patch_size == 0 and m.patch_size <= size <= m.image_size):
        raise ValueError(f"config ito.second_view_size: {size} is not a multiple of model.patch_size={m.patch_size} "
                         f"between {m.patch_size} and model.image_size={m.image_size}; use e.g. "
                         f"{max(m.patch_size, m.image_size // 2 // m.patch_size * m.patch_size)}, or 0 for full size")
    size = 0 if size == m.image_size else size  # full size: no second-view option in effect
    if not (p or size):
        return
    option = f"ito.patch_dropout={p}" if p else f"ito.second_view_size={size}"
    key = "ito.patch_dropout" if p else "ito.second_view_size"
    if not registry.get(cfg.method.name).view_options:  # only ItoModel's passes apply them
        applying = [spec.name for spec in registry.specs() if spec.view_options]
        raise ValueError(f"config {key}: {option} with method={cfg.method.name}, whose training passes do not "
                         f"apply it; set {key}={0.0 if p else 0}, or use one of {applying}")
    if size and ito.images < 2:
        raise ValueError(f"config ito.second_view_size: {size} with ito.images={ito.images} (there is no second "
                         "view); set ito.images>=2, or ito.second_view_size=0")
    if fuses(ito) and ito.fusion_image_tokens != "cls":
        raise ValueError(f"config {key}: {option} with ito.fusion_image_tokens={ito.fusion_image_tokens!r}: the "
                         "fusion module would read a patch grid the option changes; set ito.fusion_image_tokens=cls")
