"""OneR: one transformer for images, texts and (image, text) sequences (Jang et al., "Unifying
Vision-Language Representation Space with Single-tower Transformer", AAAI'23, arXiv 2211.11153).

Only the input embeddings depend on the modality: an image is its patch-conv tokens plus image
positions, a text its token embeddings plus text positions. Everything after (the blocks, the final
LayerNorm, the projection) is one parameter set, so an image, a text and a joint (image, text)
sequence are all read the same way. Choices (the paper leaves them open or we could not read them):

- Read-out token: every sequence starts with the embedding of the tokenizer's start-of-text token
  (a text already does; an image gets the same vector before its patches). One shared slot, no
  modality-specific CLS token; its final state is the sequence's representation.
- Attention: bidirectional for both modalities (a causal text mask would make texts special and
  joint sequences ill-defined), with text padding (every position after EOT) masked as keys.
- No ``ln_pre``: the pre-LN blocks normalise every block input already; one ``ln_final`` and one
  projection to the joint space, as the paper's "generic projection layer".
- Width, depth and heads come from the model's vision settings (``model.vision_*``); the text
  settings (``model.text_*``) are unused: there is one tower.

``OneTower`` (under ``encoder.`` in the training model) is what is deployed; ``OneRModel`` adds
the joint passes for the CIC and CMC losses (``ito_core.methods.oner.loss``).

Shape legend: B batch, C/H/W pixels, T image tokens (read-out slot + patches), L text tokens,
S = T + L joint tokens, D width, E joint embedding dim, Q read-out rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ito_core.config.schema import ModelConfig, RunConfig
from ito_core.methods.oner.loss import OneRObjective, oner_weights
from ito_core.models.text import eot_positions
from ito_core.models.transformer import Transformer


def sot_token_id(cfg: ModelConfig) -> int:
    """CLIP's BPE puts <start_of_text> second to last in its vocabulary (49406 of 49408)."""
    return cfg.vocab_size - 2


def text_key_mask(tokens_BL: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` True where a token takes part: up to and including EOT (padding id 0 is also "!")."""
    positions_L = torch.arange(tokens_BL.shape[1], device=tokens_BL.device)
    return positions_L[None] <= eot_positions(tokens_BL)[:, None]


class OneTower(nn.Module):
    """The deployable OneR encoder, with ``DualEncoder``'s interface (``encode_image``, ``encode_text``,
    ``scale``, ``bias``) so that eval scores it like the CLIP-style models."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        width, grid = cfg.vision_width, cfg.image_size // cfg.patch_size
        self.sot_token_id = sot_token_id(cfg)
        # Modality-specific input embeddings (the only ones).
        self.conv1 = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.image_positional_embedding = nn.Parameter(width**-0.5 * torch.randn(grid**2 + 1, width))
        self.token_embedding = nn.Embedding(cfg.vocab_size, width)
        self.text_positional_embedding = nn.Parameter(0.01 * torch.randn(cfg.context_length, width))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        # Shared by every sequence.
        self.transformer = Transformer(width=width, layers=cfg.vision_layers, heads=cfg.vision_heads,
                                       mlp_ratio=cfg.mlp_ratio)
        self.ln_final = nn.LayerNorm(width)
        self.proj = nn.Parameter(width**-0.5 * torch.randn(width, cfg.embed_dim))
        # Shape [1]: DeepSpeed cannot broadcast 0-dim parameters (as DualEncoder).
        self.logit_scale = nn.Parameter(torch.tensor([cfg.init_logit_scale]))

    def embed_image(self, images_BCHW: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]``: the shared read-out slot, then the patches; image positions added."""
        patches_BTD = self.conv1(images_BCHW).flatten(2).transpose(1, 2)
        slot_B1D = self.token_embedding.weight[self.sot_token_id].to(patches_BTD.dtype)
        slot_B1D = slot_B1D.expand(patches_BTD.shape[0], 1, -1)
        return torch.cat([slot_B1D, patches_BTD], dim=1) + self.image_positional_embedding.to(patches_BTD.dtype)

    def embed_text(self, tokens_BL: torch.Tensor) -> torch.Tensor:
        """``[B, L, D]``: token embeddings (SOT first, the read-out slot) plus text positions."""
        return self.token_embedding(tokens_BL) + self.text_positional_embedding[: tokens_BL.shape[1]]

    def read_out(self, x_BSD: torch.Tensor, keys_BS: torch.Tensor | None, queries_BSS: torch.Tensor | None,
                 rows_BQ: torch.Tensor) -> torch.Tensor:
        """Run the shared blocks and return the projected states ``[B, Q, E]`` of the rows ``rows_BQ``.

        ``keys_BS``: keys that take part (None = all); ``queries_BSS``: which key each query may attend
        to, for the joint sequences (None = all)."""
        mask = None
        if keys_BS is not None:
            mask = keys_BS[:, None, None, :]  # [B, 1, 1, S]: broadcast over heads and queries
        if queries_BSS is not None:
            mask = queries_BSS[:, None] if mask is None else mask & queries_BSS[:, None]
        rows_mask = None
        if queries_BSS is not None:  # the last block's queries are the read-out rows only
            rows_mask = mask.expand(-1, -1, x_BSD.shape[1], -1).gather(
                2, rows_BQ[:, None, :, None].expand(-1, 1, -1, x_BSD.shape[1]))
        x_BQD = self.transformer(x_BSD, mask, rows_BQ=rows_BQ, rows_mask=rows_mask)
        return self.ln_final(x_BQD) @ self.proj

    def encode_image(self, images_BCHW: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        x_BTD = self.embed_image(images_BCHW)
        rows_B1 = torch.zeros(x_BTD.shape[0], 1, dtype=torch.long, device=x_BTD.device)
        pooled_BE = self.read_out(x_BTD, None, None, rows_B1)[:, 0]
        return F.normalize(pooled_BE, dim=-1) if normalize else pooled_BE

    def encode_text(self, tokens_BL: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        x_BLD = self.embed_text(tokens_BL)
        rows_B1 = torch.zeros(x_BLD.shape[0], 1, dtype=torch.long, device=x_BLD.device)
        pooled_BE = self.read_out(x_BLD, text_key_mask(tokens_BL), None, rows_B1)[:, 0]
        return F.normalize(pooled_BE, dim=-1) if normalize else pooled_BE

    def encode_joint(self, images_BCHW: torch.Tensor, tokens_BL: torch.Tensor, *, cross_only: bool
                     ) -> torch.Tensor:
        """Both read-out slots ``[B, 2, E]`` (image's, text's) of the joint sequence [image; text].

        ``cross_only=False``: every token attends to every token: F(I,T | I,T) (CMC).
        ``cross_only=True``: image tokens attend only to text tokens and text tokens only to image
        tokens, so slot 0 is F(I | T) (image queries, text keys/values) and slot 1 F(T | I) (CIC)."""
        img_BTD, txt_BLD = self.embed_image(images_BCHW), self.embed_text(tokens_BL)
        B, T, L = img_BTD.shape[0], img_BTD.shape[1], txt_BLD.shape[1]
        keys_BS = torch.cat([torch.ones(B, T, dtype=torch.bool, device=img_BTD.device), text_key_mask(tokens_BL)], 1)
        queries_BSS = None
        if cross_only:
            is_image_S = torch.arange(T + L, device=img_BTD.device) < T
            queries_BSS = (is_image_S[:, None] != is_image_S[None, :]).expand(B, -1, -1)
        rows_B2 = torch.tensor([0, T], device=img_BTD.device).expand(B, -1)
        return self.read_out(torch.cat([img_BTD, txt_BLD], dim=1), keys_BS, queries_BSS, rows_B2)

    def scale(self) -> torch.Tensor:
        """The exp'd logit scale (one temperature for every OneR loss), clamped at 100 as CLIP does."""
        return self.logit_scale.exp().clamp(max=100.0).squeeze(0)

    def bias(self) -> None:
        return None


class OneRModel(nn.Module):
    """The training model: ``encoder`` (deployed) and nothing else; the joint passes for CIC and CMC reuse
    its blocks and run only when their loss has a positive weight.

    Outputs (L2-normalised, local batch first): ``image_features_BD`` F(I), ``text_features_BD`` F(T);
    with CIC ``cic_image_BD`` F(I|T) and ``cic_text_BD`` F(T|I); with CMC ``joint_BD`` F(I,T|I,T), the
    mean of the joint sequence's two read-out slots; and ``logit_scale``."""

    def __init__(self, cfg: ModelConfig, *, cic: bool, cmc: bool) -> None:
        super().__init__()
        self.encoder = OneTower(cfg)
        self.cic, self.cmc = cic, cmc

    def forward(self, images_BMCHW: torch.Tensor, tokens_BNL: torch.Tensor) -> dict[str, torch.Tensor]:
        # One view and one caption per sample (the spec refuses ito.images or ito.texts > 1).
        images_BCHW, tokens_BL = images_BMCHW[:, 0], tokens_BNL[:, 0]
        enc = self.encoder
        out = {"image_features_BD": enc.encode_image(images_BCHW, normalize=True),
               "text_features_BD": enc.encode_text(tokens_BL, normalize=True),
               "logit_scale": enc.scale()}
        if self.cic:
            cross_B2E = F.normalize(enc.encode_joint(images_BCHW, tokens_BL, cross_only=True), dim=-1)
            out["cic_image_BD"], out["cic_text_BD"] = cross_B2E[:, 0], cross_B2E[:, 1]
        if self.cmc:
            out["joint_BD"] = F.normalize(enc.encode_joint(images_BCHW, tokens_BL, cross_only=False).mean(1), dim=-1)
        return out


def build_model(cfg: RunConfig) -> OneRModel:
    """The joint passes run only for losses with a positive weight."""
    weights = oner_weights(cfg)
    return OneRModel(cfg.model, cic=weights["cic"] > 0, cmc=weights["cmc"] > 0)


def build_objective(cfg: RunConfig, model: nn.Module, *, rank: int, world_size: int) -> OneRObjective:
    """The objective needs nothing from the model (it has no parameters of its own)."""
    return OneRObjective(weights=oner_weights(cfg), rank=rank, world_size=world_size)


def build_one_tower(model: ModelConfig, state: dict[str, torch.Tensor]) -> OneTower:
    """The spec architecture's ``build``: the deployable single tower of a stripped OneR model."""
    return OneTower(model)
