"""The side adapter's mask decoder: mask logits and attention biases from the queries."""

from __future__ import annotations

import torch
from torch import nn

from ovss_common.torch_layers import mlp_forward, mlp_layers


class MLP(nn.Module):
    """``num_layers`` affine layers with ReLU between them (Linear, or 1x1 convolutions)."""

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, dense: bool = False
    ) -> None:
        super().__init__()
        self.layers = mlp_layers(in_dim, hidden_dim, out_dim, num_layers, dense)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mlp_forward(self.layers, x)


class MLPMaskDecoder(nn.Module):
    """Queries and pixel features to mask logits and per-head attention biases.

    Args:
        in_channels: side ViT width.
        num_heads: attention heads of the CLIP blocks the biases are for.
        num_layers: bias tensors produced (one per recognition block group).
        embed_channels: query / pixel embedding width.
        mlp_channels: hidden width of the three MLPs.
        mlp_num_layers: depth of the three MLPs.
        rescale_attn_bias: learn an affine ``w * bias + b`` on the biases.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_heads: int,
        num_layers: int,
        embed_channels: int,
        mlp_channels: int,
        mlp_num_layers: int,
        rescale_attn_bias: bool,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.query_mlp = MLP(in_channels, mlp_channels, embed_channels, mlp_num_layers)
        self.pix_mlp = MLP(in_channels, mlp_channels, embed_channels, mlp_num_layers, dense=True)
        self.attn_mlp = MLP(
            in_channels,
            mlp_channels,
            embed_channels * num_heads * num_layers,
            mlp_num_layers,
            dense=True,
        )
        self.bias_scaling = nn.Linear(1, 1) if rescale_attn_bias else nn.Identity()

    def forward(
        self, query: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """
        Args:
            query: ``[B, Q, C]`` query tokens.
            x: ``[B, C, h, w]`` pixel tokens on the side grid.

        Returns:
            mask_logits ``[B, Q, h, w]`` and ``num_layers`` attention biases
            ``[B, heads, Q, h, w]``.
        """
        query = self.query_mlp(query)
        pix = self.pix_mlp(x)
        b, c, h, w = pix.shape
        mask_logits = torch.einsum("bqc,bchw->bqhw", query, pix)
        attn = self.attn_mlp(x).reshape(b, self.num_layers, self.num_heads, c, h, w)
        attn_bias = torch.einsum("bqc,blnchw->blnqhw", query, attn)
        attn_bias = self.bias_scaling(attn_bias[..., None]).squeeze(-1)
        return mask_logits, list(attn_bias.unbind(dim=1))
