"""The objectives' input checks: tensors that do not fit together fail with one named error, before any math.

Without them a mismatch either broadcasts into a wrong loss (4 images against 5 captions is a 4 x 5 logit matrix
with a shifted diagonal) or fails deep inside torch with an index or cross-entropy error naming neither tensor.
Each tensor is checked by its name's shape suffix (``image_features_BMD``: three dims B, M, D; the letters of the
legends in ``ito_core.losses`` and ``ito_core.methods``): one dimension per letter, and a letter has one size in all
the tensors of a call.
"""

from __future__ import annotations

from torch import Tensor


class ShapeMismatch(ValueError):
    """An objective got inputs whose shapes do not fit together; the message names them and what they must be."""


def suffix(name: str) -> str:
    """``image_features_BMD`` -> ``BMD``: the dimension letters of a tensor's name."""
    return name.rpartition("_")[2]


def check_shapes(owner: str, expected: dict[str, tuple[int, str]] | None = None, /, **tensors: Tensor
                 ) -> dict[str, int]:
    """The size of each dimension letter of ``tensors`` (named by shape suffix); ``ShapeMismatch`` naming ``owner``,
    the tensors, their shapes and what they must be when a tensor has the wrong number of dimensions or a letter
    has two sizes. ``expected``: letter -> (size, where that size comes from), checked as well."""
    sizes = {letter: (size, f"{size} ({why})") for letter, (size, why) in (expected or {}).items()}
    for name, tensor in tensors.items():
        letters, shape = suffix(name), tuple(tensor.shape)
        if len(shape) != len(letters):
            raise ShapeMismatch(f"{owner}: {name} has shape {shape}; it must have {len(letters)} dimensions "
                                f"[{', '.join(letters)}]")
        for letter, size in zip(letters, shape, strict=True):
            first_size, must = sizes.setdefault(letter, (size, f"{size}, as in {name} {shape}"))
            if size != first_size:
                raise ShapeMismatch(f"{owner}: {name} has shape {shape}; its {letter} dimension must be {must}")
    return {letter: size for letter, (size, _) in sizes.items()}


def check_scalars(owner: str, /, **tensors: Tensor | None) -> None:
    """``ShapeMismatch`` unless each tensor given (None: absent) holds one value, as a logit scale or bias does."""
    for name, tensor in tensors.items():
        if tensor is not None and tensor.numel() != 1:
            raise ShapeMismatch(f"{owner}: {name} has shape {tuple(tensor.shape)}; it must hold one value "
                                "(shape () or (1,))")
