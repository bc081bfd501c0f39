"""The learnable prompt pair of WMoE-CLIP: "a photo of a good [v_n]", "a photo of a damaged [v_a]".

v_n and v_a are learnable token sequences; CTDS adds one shift ``W_z z`` per image to
every one of their tokens. The prompts are assembled in token-embedding space and
encoded by the frozen text transformer (:func:`zsad.text.prompt_layout`, then
:func:`zsad.text.fill_prompt_layout`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ...text import PromptLayout, encode_learned_prompts, fill_prompt_layout, prompt_layout


class LearnablePromptPair(nn.Module):
    """Learnable tokens v_n, v_a after fixed words.

    Args:
        text_width: d_text, width of the token embeddings.
        length: tokens per learned sequence.
        normal_prefix, abnormal_prefix: the words before v_n and v_a.
        init_std: std of the normal initialisation of the tokens.
    """

    def __init__(self, text_width: int, length: int, normal_prefix: str, abnormal_prefix: str, init_std: float = 0.02):
        super().__init__()
        self.prefixes = (normal_prefix, abnormal_prefix)
        self.tokens = nn.Parameter(torch.randn(2, length, text_width) * init_std)  # [v_n, v_a]

    def layout(self, backbone) -> PromptLayout:
        """The two prompts' layout (rows: normal, abnormal), built on the host (tokenizer)."""
        return prompt_layout(backbone, list(self.prefixes), suffix_length=self.tokens.shape[1])

    def forward(self, backbone, shift: Tensor | None, layout: PromptLayout | None = None) -> Tensor:
        """Encode the prompt pair.

        Args:
            backbone: the frozen ClipBackbone (tokenizer and text transformer).
            shift: (B, d_text) per-image shift added to every learned token, or None
                (one pair shared by all images).
            layout: :meth:`layout`, when already built (e.g. outside a compiled graph).

        Returns:
            (B, 2, d_t) L2-normalised [T_n, T_a] (B = 1 when ``shift`` is None).
        """
        tokens = self.tokens.unsqueeze(0)  # (1, 2, P, d_text)
        if shift is not None:
            tokens = tokens + shift[:, None, None, :].to(tokens.dtype)
        batch, pair, length, width = tokens.shape
        layout = (self.layout(backbone) if layout is None else layout).repeat(batch)  # rows [n, a] x B
        prompts = fill_prompt_layout(backbone, layout, suffix=tokens.reshape(batch * pair, length, width))
        return encode_learned_prompts(backbone, prompts).reshape(batch, pair, -1)
