"""One OpenCLIP vision block computed with fused attention, plus the V-V branch.

OpenCLIP's ``ResidualAttentionBlock`` goes through ``nn.MultiheadAttention``, which
(batch-first) transposes the tokens to sequence-first, projects q, k and v, and
transposes back around the attention kernel. :func:`run_block` computes the same block
from the same weights with one packed q/k/v projection and
``F.scaled_dot_product_attention`` on (B, heads, T, d_h) views, and shares that
projection with the V-V stream (whose values are the block's own v).

The text tower's blocks take the same path with ``causal=True`` (SDPA's own causal
mask instead of OpenCLIP's additive float mask). Blocks this module cannot reproduce
exactly (other attention masks, cross-attention, extra key/value biases, attention
dropout in training) run through OpenCLIP's own forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def supports_fused_attention(block: nn.Module) -> bool:
    """True when ``block`` is a plain pre-norm self-attention block whose
    ``nn.MultiheadAttention`` has one packed, batch-first q/k/v projection."""
    attention = getattr(block, "attn", None)
    return (
        isinstance(attention, nn.MultiheadAttention)
        and attention.batch_first
        and attention.in_proj_weight is not None
        and attention.bias_k is None
        and not attention.add_zero_attn
        and (attention.dropout == 0.0 or not attention.training)
        and not hasattr(block, "ln_1_kv")
        and all(hasattr(block, name) for name in ("ln_1", "ln_2", "mlp", "ls_1", "ls_2"))
    )


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, d) -> (B, heads, T, d / heads). (A reshape from the tensor's own sizes, not
    ``unflatten``: traced for ONNX, the latter fixes the batch size.)"""
    batch, tokens, width = t.shape
    return t.reshape(batch, tokens, heads, width // heads).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, d_h) -> (B, T, heads * d_h)."""
    batch, heads, tokens, head_width = t.shape
    return t.transpose(1, 2).reshape(batch, tokens, heads * head_width)


def vv_update(block: nn.Module, values: torch.Tensor) -> torch.Tensor:
    """V-V self-attention from a block's value heads (B, heads, T, d_h): the update
    ``ls_1(out_proj(softmax(V V^T / sqrt(d_h)) V))``, (B, T, d)."""
    mixed = F.scaled_dot_product_attention(values, values, values)
    return block.ls_1(block.attn.out_proj(_merge_heads(mixed)))


def value_heads(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block's value heads of its normalised input x (B, T, d): (B, heads, T, d_h)."""
    attention: nn.MultiheadAttention = block.attn
    width = x.shape[-1]
    bias = attention.in_proj_bias[2 * width :] if attention.in_proj_bias is not None else None
    return _split_heads(F.linear(block.ln_1(x), attention.in_proj_weight[2 * width :], bias), attention.num_heads)


def run_block(
    block: nn.Module, x: torch.Tensor, with_vv: bool, fused: bool = True, causal: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One block on x (B, T, d). Returns (the block's output (B, T, d), the V-V update
    (B, T, d) of the same block when ``with_vv``, else None).

    Fused path when ``fused`` and :func:`supports_fused_attention`, else OpenCLIP's
    forward (the reference) and the V-V values from a separate projection. ``causal``:
    token t attends to tokens 0..t only (the text tower); it needs the fused path."""
    if not (fused and supports_fused_attention(block)):
        if causal:
            raise ValueError("a causal block needs the fused path (OpenCLIP's forward takes the mask itself)")
        return block(x), (vv_update(block, value_heads(block, x)) if with_vv else None)
    attention: nn.MultiheadAttention = block.attn
    heads = attention.num_heads
    qkv = F.linear(block.ln_1(x), attention.in_proj_weight, attention.in_proj_bias)
    q, k, v = (_split_heads(part, heads) for part in qkv.chunk(3, dim=-1))
    dropout = attention.dropout if attention.training else 0.0
    mixed = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)
    out = x + block.ls_1(attention.out_proj(_merge_heads(mixed)))
    out = out + block.ls_2(block.mlp(block.ln_2(out)))
    return out, (vv_update(block, v) if with_vv else None)
