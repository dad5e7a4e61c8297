"""What a training method declares, in one place: :class:`MethodSpec`. Torch-free, so config loading, run keys,
``ito-sweep plan`` and the flow process read it without building a model.

Each method is one package ``ito_core/methods/<name>/`` whose ``__init__`` defines ``SPEC`` (this module's types,
torch-free) and whose other modules hold its torch code, named in the spec as ``"module:attribute"`` strings and
imported only when a stage calls them (:func:`resolve`). ``configs/method/<name>.yaml`` holds its defaults. Nothing
else in ``ito_core`` names a method: strip, eval, artifacts, plan and validation ask the registry
(``ito_core.methods.registry``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ito_core.config.schema import MethodConfig, RunConfig

# How a method enters the run key (ito_core.artifacts.run_key):
RUN_KEY_NONE = "none"  # not at all: its model and objective are fixed by the ito/loss settings, already in the key
RUN_KEY_LEGACY = "legacy"  # the flat dict of every option of the legacy methods (see registry.method_identity)
RUN_KEY_OWN = "own"  # its name and its own options
RUN_KEY_KINDS = (RUN_KEY_NONE, RUN_KEY_LEGACY, RUN_KEY_OWN)


def resolve(ref: str) -> Any:
    """The attribute a ``"package.module:attribute"`` reference names, imported now (torch code stays unloaded
    until a stage needs it)."""
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


def dual_encoder_card(cfg: RunConfig, manifest: dict[str, Any]) -> tuple[str, str]:
    """Title and summary of a CLIP dual encoder's model card."""
    views = f"{cfg.ito.images} image view{'' if cfg.ito.images == 1 else 's'}"
    captions = f"{cfg.ito.texts} caption{'' if cfg.ito.texts == 1 else 's'}"
    title = f"{cfg.method.name.upper()} dual encoder `{cfg.model.name}`"
    summary = f"""A CLIP dual encoder (ViT image tower, causal text transformer) trained with
`method={cfg.method.name}`: {views} x {captions} per sample, fusion `{cfg.ito.fusion}` (weight
{cfg.ito.fusion_weight}), loss `{cfg.loss.name}`. Training-only weights (ITO's fusion module, SLIP's SSL head,
FLAIR's pooling) were dropped: the model has exactly a CLIP dual encoder's {manifest["num_parameters"]:,} parameters
({manifest["dropped_parameters"]:,} training-only parameters removed)."""
    return title, summary


@dataclass(frozen=True)
class Architecture:
    """A deployable encoder class, as named by ``model_config.json``'s ``architecture`` field.

    ``build``: ``"module:function"`` of ``(ModelConfig, state_dict) -> nn.Module`` (weights not loaded yet).
    ``open_clip``: whether OpenCLIP's layout can hold it (``ito_core.export``); ``no_open_clip`` says why not.
    ``card``: title and summary of its model card, from the run config and the strip manifest."""

    name: str
    build: str
    card: Callable[[RunConfig, dict[str, Any]], tuple[str, str]]
    open_clip: bool = True
    no_open_clip: str = ""


DUAL_ENCODER = Architecture(name="dual_encoder", build="ito_core.model_folder:build_dual_encoder",
                            card=dual_encoder_card)


@dataclass(frozen=True)
class OwnEval:
    """An eval path of the method's own, beside the suite every model gets.

    ``build``: ``"module:function"`` of ``(model_dir, cfg) -> ito_core.eval.extra.ExtraEval``, the hook the suite
    hands each encoded eval set to; ``tasks``: the CLIP_benchmark tasks it scores again, recording each metric as
    ``<prefix><metric>`` (``ito_core.eval.names.expected_metrics`` reads them without building the hook)."""

    build: str
    tasks: tuple[str, ...]
    prefix: str


@dataclass(frozen=True)
class MethodSpec:
    """One training method: see the module docstring; ``ito_core/methods/flair/__init__.py`` is a full example.

    - ``name``: ``method.name``; ``config``: its options, a dataclass subclassing ``MethodConfig`` whose fields are
      the ``method.<option>`` keys users write (unique across methods; by convention ``<name>_<option>``).
    - ``validate``: ``(RunConfig) -> None``, raising ``ValueError`` naming the key and the fix; ``warnings``: valid
      but doubtful settings, one line each.
    - ``run_key``: one of ``RUN_KEY_KINDS``.
    - ``builders``: the module holding ``build_model(cfg)``, ``build_objective(cfg, model, *, rank, world_size)``
      and, when its views are not the loop's M identical-recipe views, ``build_augment(cfg)``.
    - ``view_options``: whether its training model applies ``ito.patch_dropout`` / ``ito.second_view_size``.
    - ``architecture``: the deployable encoder; ``save_files``: ``"module:function"`` of ``(full_state, out_dir,
      cfg) -> None`` writing the extra files it keeps beside the stripped model; ``own_eval``: its own eval path.
    - ``flops_uncounted``: what ``ito_core.flops`` leaves out of its training FLOPs ("" = nothing).
    """

    name: str
    builders: str
    config: type[MethodConfig] | None = None  # None: the plain MethodConfig, no options
    validate: Callable[[RunConfig], None] | None = None
    warnings: Callable[[RunConfig], list[str]] | None = None
    run_key: str = RUN_KEY_OWN
    view_options: bool = False
    architecture: Architecture = DUAL_ENCODER
    save_files: str | None = None
    own_eval: OwnEval | None = None
    flops_uncounted: str = ""

    def __post_init__(self) -> None:
        assert self.run_key in RUN_KEY_KINDS, (self.name, self.run_key)
