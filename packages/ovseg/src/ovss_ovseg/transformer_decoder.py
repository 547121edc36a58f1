"""MaskFormer's query decoder (a DETR decoder without encoder) and its open-vocabulary heads."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ovss_common.torch_layers import mlp_forward, mlp_layers


def sine_position_embedding(x: torch.Tensor, num_feats: int) -> torch.Tensor:
    """DETR's normalised sine embedding of a ``[B, C, H, W]`` map -> ``[B, 2 * num_feats, H, W]``
    (y features first, then x; temperature 10000, scale 2 pi)."""
    b, _, h, w = x.shape
    ones = torch.ones(b, h, w, device=x.device, dtype=torch.float32)
    y_embed = ones.cumsum(1)
    x_embed = ones.cumsum(2)
    eps, scale = 1e-6, 2 * math.pi
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=x.device)
    dim_t = 10000 ** (2 * (dim_t // 2) / num_feats)
    pos_x = x_embed[..., None] / dim_t
    pos_y = y_embed[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = mlp_layers(in_dim, hidden_dim, out_dim, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mlp_forward(self.layers, x)


class DecoderLayer(nn.Module):
    """Post-norm DETR decoder layer: self-attention, cross-attention, ReLU FFN."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor
    ) -> torch.Tensor:
        """``tgt`` ``[B, Q, C]`` queries, ``memory`` ``[B, HW, C]`` with positions ``pos``."""
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(q, k, tgt, need_weights=False)[0])
        attended = self.multihead_attn(tgt + query_pos, memory + pos, memory, need_weights=False)
        tgt = self.norm2(tgt + attended[0])
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class TransformerDecoder(nn.Module):
    """Decoder layers followed by a shared final LayerNorm (``norm``)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, nhead, dim_feedforward) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor
    ) -> torch.Tensor:
        """Last layer's normalised queries ``[B, Q, C]`` (queries start at zero)."""
        tgt = torch.zeros_like(query_pos)
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos)
        return self.norm(tgt)


class _DecoderHolder(nn.Module):
    """Keeps the released parameter path ``transformer.decoder.*`` (the encoder has no layers)."""

    def __init__(self, decoder: TransformerDecoder) -> None:
        super().__init__()
        self.decoder = decoder


class OpenVocabTransformerPredictor(nn.Module):
    """Queries attend to the lowest-resolution feature; each query yields a class embedding
    (matched against text embeddings later) and a mask embedding (dotted with mask features).

    Args:
        in_channels: channels of the transformer input feature (res5).
        hidden_dim: decoder width.
        num_queries: number of mask proposals.
        nheads, dim_feedforward, dec_layers: decoder geometry.
        mask_dim: width of the mask features.
        embedding_dim: width of the class embedding (= CLIP's embedding width).
        embed_hidden_dim, embed_layers: the class-embedding MLP.
        enforce_input_project: a 1x1 input projection even when widths agree.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        mask_dim: int,
        embedding_dim: int,
        embed_hidden_dim: int,
        embed_layers: int,
        enforce_input_project: bool,
    ) -> None:
        super().__init__()
        self.transformer = _DecoderHolder(
            TransformerDecoder(hidden_dim, nheads, dim_feedforward, dec_layers)
        )
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        if in_channels != hidden_dim or enforce_input_project:
            self.input_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
        else:
            self.input_proj = nn.Identity()
        self.class_embed = MLP(hidden_dim, embed_hidden_dim, embedding_dim, embed_layers)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.hidden_dim = hidden_dim

    def forward(
        self, x: torch.Tensor, mask_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: ``[B, C, h, w]`` transformer input feature.
            mask_features: ``[B, mask_dim, H/4, W/4]``.

        Returns:
            class embeddings ``[B, Q, embedding_dim]`` (unnormalised) and mask logits
            ``[B, Q, H/4, W/4]``.
        """
        pos = sine_position_embedding(x, self.hidden_dim // 2).flatten(2).transpose(1, 2)
        memory = self.input_proj(x).flatten(2).transpose(1, 2)
        query_pos = self.query_embed.weight[None].expand(x.shape[0], -1, -1)
        hs = self.transformer.decoder(memory, pos.to(memory.dtype), query_pos)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(hs), mask_features)
        return self.class_embed(hs), masks
