"""FLAIR (Xiao et al. 2025, "FLAIR: VLM with Fine-grained Language-informed Image Representations",
arXiv 2412.03561; code github.com/ExplainableML/flair): the project's dual encoder plus a training-time
text-conditioned attention pooling module, trained with two sigmoid losses.

- :class:`TextConditionedPool` (FLAIR's ``PureAttentionPoolingBlock``): the global embedding of a text is the
  query of one multi-head cross-attention over an image's patch tokens (LayerNorm on query, keys and values;
  one extra all-zero key/value, ``add_zero_attn``). It gives v_tc(i, j): image i as seen by text j.
- :class:`FlairModel`: ``encoder.*`` is the deployable CLIP dual encoder; ``flair_pool.*`` is training-only
  (strip keeps it beside the model as ``flair_pool.safetensors`` for the text-conditioned eval path).
- :class:`FlairLoss`: L_tcs (every local image pooled by every gathered sub-caption, scored against that
  sub-caption) and L_mps (the global image embedding against every gathered sub-caption); label +1 for the
  image's own N sub-captions, -1 otherwise. :class:`FlairObjective`: L = (L_tcs + L_mps) / 2, as the released
  code (``FlairLoss(added_mps_loss=True)``).

Distributed semantics as ``ito_core.losses``: local images against the gathered texts (with gradient), each
rank normalised by its local images x N, so the mean over ranks equals one process on the joined batch:
    L_tcs = -1/(G N) sum_{i < G} sum_{j < G N} log sigmoid(z_ij (t <v_tc(i, j), t_j> + b))
    L_mps = -1/(G N) sum_{i < G} sum_{j < G N} log sigmoid(z_ij (t <v_i, t_j> + b))
with unit vectors, z_ij = +1 when text j is one of image i's N sub-captions, else -1: per image the mean over
the G N texts, summed over images (SigLIP's -1/|B| sum_ij has the same per-image scale).
The released multi-GPU loss differs; docs/METHOD.md "FLAIR" says how.

Shape legend: B local images, G global images, N sub-captions per image (``ito.texts``), J = G N gathered
texts, Q queries, P patch tokens, T image tokens (CLS + patches), E joint dim, H heads, d head dim.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ito_core.config.schema import ModelConfig, RunConfig
from ito_core.losses import gather_features, init_logit_bias
from ito_core.models.dual_encoder import DualEncoder
from ito_core.shapes import check_scalars, check_shapes

POOL_PREFIX = "flair_pool."
POOL_WEIGHTS, POOL_CONFIG = "flair_pool.safetensors", "flair_pool_config.json"


class TextConditionedPool(nn.Module):
    """FLAIR's text-conditioned attention pooling (``PureAttentionPoolingBlock``): LN(q), LN(k), LN(v), then
    ``nn.MultiheadAttention(E, heads, add_zero_attn=True)``; no LayerNorm or projection after it.

    The attention weights use ``nn.MultiheadAttention``'s names, shapes and initialisation, held on this module
    itself (ZeRO-3 gathers a module's parameters when that module runs). The forward pass projects each query
    once for all images (the released code expands the queries to every image first): same result, B x fewer
    query projections. Neither side has padding: a query is one pooled text embedding per sub-caption and the
    keys are the image's fixed grid of patch tokens.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"method.flair_heads={heads} must divide model.embed_dim={dim}; pick a divisor")
        self.heads = heads
        self.ln_q, self.ln_k, self.ln_v = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)  # as nn.MultiheadAttention._reset_parameters
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, queries_QE: Tensor, patches_BPE: Tensor) -> Tensor:
        """Every image pooled by every query: ``[B, Q, E]`` (not normalised)."""
        B, P, E = patches_BPE.shape
        H, d = self.heads, E // self.heads
        w, b = self.in_proj_weight, self.in_proj_bias
        q_HQd = F.linear(self.ln_q(queries_QE), w[:E], b[:E]).view(-1, H, d).transpose(0, 1)
        k_BPE = F.linear(self.ln_k(patches_BPE), w[E:2 * E], b[E:2 * E])
        v_BPE = F.linear(self.ln_v(patches_BPE), w[2 * E:], b[2 * E:])
        # add_zero_attn: one all-zero key and value after the projections, so a text can attend to "nothing".
        zero_B1E = k_BPE.new_zeros(B, 1, E)
        k_BHSd = torch.cat([k_BPE, zero_B1E], dim=1).view(B, P + 1, H, d).transpose(1, 2)
        v_BHSd = torch.cat([v_BPE, zero_B1E], dim=1).view(B, P + 1, H, d).transpose(1, 2)
        out_BHQd = F.scaled_dot_product_attention(q_HQd.expand(B, -1, -1, -1), k_BHSd, v_BHSd)
        return self.out_proj(out_BHQd.transpose(1, 2).reshape(B, -1, E))


class FlairModel(nn.Module):
    """``encoder.*``: the CLIP dual encoder (deployed); ``flair_pool.*``: the pooling module (training-only).

    Outputs (local batch first): the global image embedding, the image's patch tokens in the joint space
    (FLAIR's ``image_post`` of the tokens after ``ln_post``: the CLS token is left out, as the released code
    does) and the global sub-caption embeddings, all unnormalised; the logit scale and bias.
    """

    def __init__(self, model: ModelConfig, *, heads: int, logit_bias: float) -> None:
        super().__init__()
        self.encoder = DualEncoder(model, logit_bias=logit_bias)
        self.flair_pool = TextConditionedPool(model.embed_dim, heads)

    def forward(self, images_BMCHW: Tensor, tokens_BNL: Tensor) -> dict[str, Tensor]:
        assert images_BMCHW.shape[1] == 1, "FLAIR trains on one image view (its spec's validate: ito.images=1)"
        B, N = tokens_BNL.shape[:2]
        image_BE, tokens_BTE = self.encoder.visual(images_BMCHW[:, 0], return_tokens=True)
        text_BE, _ = self.encoder.text(tokens_BNL.flatten(0, 1))
        return {"image_embed_BE": image_BE, "patch_tokens_BPE": tokens_BTE[:, 1:],
                "text_embed_BNE": text_BE.view(B, N, -1), "logit_scale": self.encoder.scale(),
                "logit_bias": self.encoder.bias()}


def sigmoid_labels(batch: int, num_texts: int, num_gathered: int, *, rank: int, device: torch.device) -> Tensor:
    """``[B, J]``: +1 where gathered text j (image ``j // N``) belongs to local image i, else -1."""
    owner_J = torch.arange(num_gathered, device=device) // num_texts
    image_B1 = torch.arange(batch, device=device)[:, None] + rank * batch
    return torch.where(owner_J[None] == image_B1, 1.0, -1.0)


class FlairLoss(nn.Module):
    """L_tcs and L_mps of FLAIR (arXiv 2412.03561) on the global batch; see the module docstring.

    ``pool`` is called on every (local image, gathered text) pair: it is the model's submodule, held as a
    plain reference so that the loss owns no parameters (the model's optimizer updates them).
    """

    def __init__(self, pool: TextConditionedPool, *, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        object.__setattr__(self, "pool", pool)  # not a submodule: its parameters belong to the model
        self.rank, self.world_size = rank, world_size

    def forward(self, image_BE: Tensor, patches_BPE: Tensor, text_BNE: Tensor, logit_scale: Tensor,
                logit_bias: Tensor) -> dict[str, Tensor]:
        check_shapes("FlairLoss", image_embed_BE=image_BE, patch_tokens_BPE=patches_BPE, text_embed_BNE=text_BNE)
        check_scalars("FlairLoss", logit_scale=logit_scale, logit_bias=logit_bias)
        B, N = text_BNE.shape[:2]
        texts_JE = gather_features(text_BNE, rank=self.rank, world_size=self.world_size).flatten(0, 1)
        labels_BJ = sigmoid_labels(B, N, texts_JE.shape[0], rank=self.rank, device=text_BNE.device)
        acc = torch.promote_types(texts_JE.dtype, torch.float32)  # logits in float32 at least (bf16 training)
        texts_JE_unit = F.normalize(texts_JE.to(acc), dim=-1)
        scale, bias = logit_scale.to(acc), logit_bias.to(acc)
        # v_tc(i, j): local image i pooled by text j's global embedding (the unnormalised one, as released).
        pooled_BJE = F.normalize(self.pool(texts_JE, patches_BPE).to(acc), dim=-1)
        tc_logits_BJ = scale * (pooled_BJE * texts_JE_unit[None]).sum(-1) + bias
        mps_logits_BJ = scale * F.normalize(image_BE.to(acc), dim=-1) @ texts_JE_unit.T + bias
        norm = B * N  # per rank; the mean over ranks is the single-process 1 / (G N)
        return {"tcs_loss": -F.logsigmoid(labels_BJ * tc_logits_BJ).sum() / norm,
                "mps_loss": -F.logsigmoid(labels_BJ * mps_logits_BJ).sum() / norm}


class FlairObjective(nn.Module):
    """L = (L_tcs + L_mps) / 2 on the outputs of :class:`FlairModel` (the released ``FlairLoss`` with
    ``added_mps_loss=True``). It calls ``model.flair_pool``, so train.micro_batch_size accumulation is refused."""

    def __init__(self, pool: TextConditionedPool, *, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.loss = FlairLoss(pool, rank=rank, world_size=world_size)

    def forward(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        losses = self.loss(out["image_embed_BE"], out["patch_tokens_BPE"], out["text_embed_BNE"],
                           out["logit_scale"], out["logit_bias"])
        return {"loss": (losses["tcs_loss"] + losses["mps_loss"]) / 2, **losses,
                "logit_scale": out["logit_scale"].detach()}


def build_model(cfg: RunConfig) -> FlairModel:
    bias = init_logit_bias(cfg.loss.name, siglip_init_bias=cfg.loss.siglip_init_bias)
    assert bias is not None, "the flair spec's validate requires loss.name=siglip"
    return FlairModel(cfg.model, heads=cfg.method.flair_heads, logit_bias=bias)  # type: ignore[attr-defined]


def build_objective(cfg: RunConfig, model: nn.Module, *, rank: int, world_size: int) -> FlairObjective:
    assert isinstance(model, FlairModel), type(model)
    return FlairObjective(model.flair_pool, rank=rank, world_size=world_size)


# ---- the pooler beside the stripped model (for the text-conditioned eval path) -------------------------


def save_pooler(full_state: dict[str, Tensor], out_dir: Path, *, dim: int, heads: int) -> int:
    """Write ``flair_pool.safetensors`` + its config when the training state has a pooler; its parameter count
    (0 = none written)."""
    state = {k[len(POOL_PREFIX):]: v.contiguous() for k, v in full_state.items() if k.startswith(POOL_PREFIX)}
    if not state:
        return 0
    save_file(state, str(out_dir / POOL_WEIGHTS), metadata={"format": "pt"})
    (out_dir / POOL_CONFIG).write_text(json.dumps({"dim": dim, "heads": heads}, indent=2))
    return sum(v.numel() for v in state.values())


def save_files(full_state: dict[str, Tensor], out_dir: Path, cfg: RunConfig) -> None:
    """The spec's ``save_files``: the pooler beside the stripped model (training-only for the dual encoder, used by
    FLAIR's own eval path)."""
    save_pooler(full_state, out_dir, dim=cfg.model.embed_dim, heads=cfg.method.flair_heads)  # type: ignore[attr-defined]


def load_pooler(model_dir: Path) -> TextConditionedPool | None:
    """The pooler saved beside a stripped model, or None when the folder has none (not a FLAIR model)."""
    if not (Path(model_dir) / POOL_WEIGHTS).is_file():
        return None
    spec = json.loads((Path(model_dir) / POOL_CONFIG).read_text())
    pool = TextConditionedPool(spec["dim"], spec["heads"])
    pool.load_state_dict(load_file(str(Path(model_dir) / POOL_WEIGHTS)))
    return pool.eval()
