"""Frozen OpenCLIP backbone run block by block.

`create_backbone` builds an OpenCLIP model from a hub tag (``openai``), a local weight
file (an OpenAI JIT archive or an OpenCLIP state dict in .pt/.bin/.safetensors) or
random weights (see :mod:`zsad.clip_weights`), interpolates its positional embedding to the requested input size and
wraps it in :class:`ClipBackbone`, which

* runs the visual transformer one block at a time and returns the hidden states after
  the tapped blocks,
* lets a method replace the hidden state after a block by its own module (in-stream
  adapters such as MoECLIP's mixture of experts),
* optionally runs a parallel V-V attention stream for the last blocks (CLIP Surgery /
  AnomalyCLIP style, see ``docs/specification.md`` (PromptMoE)),
* encodes text, from token ids or from token embeddings (prompt learning).

No CLIP weight ever receives a gradient.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import open_clip
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from .clip_weights import WeightsUnavailableError, build_clip, canonical_weights, is_random_weights
from .errors import InvalidInputError
from .maps import REFERENCE_SIZE
from .settings import ACTIVATION_NAMES
from .tracing import is_compiling
from .vit_blocks import run_block, supports_fused_attention

DEFAULT_MODEL_NAME = "ViT-L-14-336"
_DEFAULT_IMAGE_SIZES = {"ViT-L-14-336": REFERENCE_SIZE}


@dataclass(frozen=True)
class BackboneConfig:
    """Everything needed to rebuild a backbone.

    model_name: an OpenCLIP model name (``ViT-L-14-336``, ``ViT-B-16``, ``zsad-tiny``...).
    weights: an OpenCLIP hub tag (``openai``), a local weight file, or ``random[:SEED]``
        (random weights, a deterministic function of the model config and SEED; ``random``
        is seed 0).
    image_size: input side in pixels; None = REFERENCE_SIZE for ViT-L-14-336, else the model's own.
        The patch grid is image_size // patch (a remainder is resampled away).
    cache_dir: where OpenCLIP caches hub downloads (None = its default).
    quick_gelu: None = as the weights were trained (True for OpenAI weights and files).
    """

    model_name: str = DEFAULT_MODEL_NAME
    weights: str = "openai"
    image_size: int | None = None
    cache_dir: str | None = None
    quick_gelu: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "weights": self.weights,
            "image_size": self.image_size,
            "cache_dir": self.cache_dir,
            "quick_gelu": self.quick_gelu,
        }


# The MLP activation of the transformer blocks, as the command line names it, and
# BackboneConfig.quick_gelu's value for it. OpenAI's CLIP was trained with QuickGELU.
ACTIVATIONS = dict(zip(ACTIVATION_NAMES, (True, False)))


def quick_gelu_for(activation: str | None) -> bool | None:
    """``quick_gelu`` / ``gelu`` -> True / False; None -> None (as the weights were trained)."""
    if activation is None:
        return None
    if activation not in ACTIVATIONS:
        raise InvalidInputError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    return ACTIVATIONS[activation]


def interpolate_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int]) -> torch.Tensor:
    """Bicubically resample a ViT positional embedding to another patch grid, as OpenCLIP's
    own ``resize_pos_embed`` (and the MoECLIP authors' code) does: bicubic WITH antialias.
    Without antialias PyTorch's bicubic kernel differs also when enlarging (24 -> 37 moved
    the grid maps of a ViT by up to 0.1), so the backbone would match neither.

    pos_embed: (1 + g*g, d) with the class position first and a square g x g grid.
    Returns (1 + h*w, d) for new_grid = (h, w). At the original grid the result equals
    the input (bicubic resampling with scale 1 is the identity).
    """
    cls_pos, grid_pos = pos_embed[:1], pos_embed[1:]
    old = int(round(math.sqrt(grid_pos.shape[0])))
    if old * old != grid_pos.shape[0]:
        raise ValueError(f"positional embedding of {grid_pos.shape[0]} patches is not a square grid")
    grid = grid_pos.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    resized = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False, antialias=True)
    resized = resized.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1).to(pos_embed.dtype)
    return torch.cat([cls_pos, resized], dim=0)


@dataclass
class VisualFeatures:
    """What one pass of the visual tower returns.

    hidden: block (1-based) -> (B, 1 + L, d) residual stream after the block, after the
        in-stream module of that block if any.
    vv_hidden: block -> (B, 1 + L, d) V-V stream after the block (blocks >= vv_start).
    stream_outputs: block -> whatever the in-stream module returned (e.g. routing data).
    image_embedding: (B, d_t) CLIP's global image embedding (ln_post + proj of the final CLS).
    grid: (h, w) patch grid, L = h * w.
    """

    hidden: dict[int, torch.Tensor]
    vv_hidden: dict[int, torch.Tensor]
    stream_outputs: dict[int, Any]
    image_embedding: torch.Tensor
    grid: tuple[int, int]

    def patch_tokens(self, block: int) -> torch.Tensor:
        """(B, L, d) patch tokens of a tapped block (the V-V stream where it exists)."""
        source = self.vv_hidden.get(block, self.hidden[block])
        return source[:, 1:]


StreamModule = Callable[[torch.Tensor], Any]


class ClipBackbone(nn.Module):
    """A frozen OpenCLIP model with block-by-block access to its visual tower."""

    def __init__(self, clip_model: nn.Module, config: BackboneConfig, weights_description: str):
        super().__init__()
        self.clip = clip_model
        self.weights_description = weights_description
        visual = clip_model.visual
        if not hasattr(visual, "transformer") or not hasattr(visual, "conv1"):
            raise WeightsUnavailableError(
                f"'{config.model_name}' is not a plain ViT; zsad needs an OpenCLIP VisionTransformer"
            )
        self.patch_size = visual.patch_size[0]
        native = visual.image_size[0]
        self.image_size = config.image_size or _DEFAULT_IMAGE_SIZES.get(config.model_name, native)
        # The config is resolved when built: it names the concrete input side.
        self.config = replace(config, image_size=self.image_size)
        if self.image_size < self.patch_size:
            raise InvalidInputError(f"image size {self.image_size} is smaller than the patch size {self.patch_size}")
        # grid = size // patch (spec); a size that is not a multiple of the patch is
        # resampled to grid * patch inside the backbone (see fit_to_patch_grid).
        grid = (self.image_size // self.patch_size,) * 2
        self.patched_size = grid[0] * self.patch_size
        if tuple(visual.grid_size) != grid:
            new_pos = interpolate_pos_embed(visual.positional_embedding.data, grid)
            visual.positional_embedding = nn.Parameter(new_pos, requires_grad=False)
            visual.grid_size = grid
            visual.image_size = (self.patched_size, self.patched_size)
        self.grid = grid
        # Blocks run with one packed q/k/v projection and fused attention; False runs
        # OpenCLIP's own block forward (the reference the fused path is tested against).
        self.fused_attention = True
        for parameter in self.clip.parameters():
            parameter.requires_grad_(False)
        self.clip.eval()

    # ------------------------------------------------------------------ sizes
    @property
    def width(self) -> int:
        """d: width of the visual transformer."""
        return self.clip.visual.conv1.out_channels

    @property
    def embed_dim(self) -> int:
        """d_t: the joint image-text embedding size."""
        return self.clip.visual.proj.shape[1]

    @property
    def depth(self) -> int:
        return len(self.clip.visual.transformer.resblocks)

    @property
    def num_heads(self) -> int:
        return self.clip.visual.transformer.resblocks[0].attn.num_heads

    @property
    def logit_scale(self) -> float:
        """CLIP's learned temperature exp(logit_scale) (100 for OpenAI weights)."""
        return float(self.clip.logit_scale.exp().clamp(max=100.0))

    def default_taps(self) -> tuple[int, ...]:
        """Blocks D/4, D/2, 3D/4 and D (1-based), e.g. 6, 12, 18, 24 for ViT-L."""
        depth = self.depth
        return tuple(sorted({max(1, round(depth * q / 4)) for q in (1, 2, 3, 4)}))

    def resolve_taps(self, taps: Sequence[int]) -> tuple[int, ...]:
        """A method's configured 1-based blocks; empty means ``default_taps()``."""
        resolved = tuple(taps) or self.default_taps()
        outside = [block for block in resolved if not 1 <= block <= self.depth]
        if outside:
            raise InvalidInputError(f"blocks {outside} outside 1..{self.depth} of {self.config.model_name}")
        return resolved

    def resolve_vv_start(self, vv_start: int | None) -> int:
        """A method's configured first V-V block; None means ``default_vv_start()``."""
        resolved = vv_start or self.default_vv_start()
        if not 1 <= resolved <= self.depth:
            raise InvalidInputError(f"V-V start block {resolved} outside 1..{self.depth} of {self.config.model_name}")
        return resolved

    def default_vv_start(self) -> int:
        """First block of the V-V stream: D/2 + 1 (block 13 of 24)."""
        return self.depth // 2 + 1

    @property
    def random_weights(self) -> bool:
        """True when the backbone is randomly initialised (outputs are a pipeline check)."""
        return is_random_weights(self.weights_description)

    def describe(self) -> dict[str, Any]:
        return {
            "model_name": self.config.model_name,
            "weights": self.weights_description,
            "image_size": self.image_size,
            "random_weights": self.random_weights,
        }

    def train(self, mode: bool = True) -> "ClipBackbone":
        """CLIP stays in eval mode whatever the surrounding model does."""
        super().train(mode)
        self.clip.eval()
        return self

    # ------------------------------------------------------------------ vision
    def fit_to_patch_grid(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, C, S', S'), S' = (S // P) * P for patch size P.

        Images whose side S is not a multiple of P are resampled (bicubic, antialiased), so
        that the h x w patch grid covers the whole image: a strided patch convolution would
        drop the last S - S' rows and columns, and the map upsampled back to S would be
        shifted against the image. Other images are returned unchanged.
        """
        size = images.shape[-2:]
        if tuple(size) != (self.image_size, self.image_size):
            raise ValueError(f"images are {tuple(size)}, the backbone expects {self.image_size} x {self.image_size}")
        if self.patched_size == self.image_size:
            return images
        return F.interpolate(images, size=(self.patched_size,) * 2, mode="bicubic", align_corners=False, antialias=True)

    def _embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 1 + L, d) tokens entering block 1 (see fit_to_patch_grid)."""
        visual = self.clip.visual
        images = self.fit_to_patch_grid(images)
        x = visual.conv1(images.to(visual.conv1.weight.dtype))
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        return visual.ln_pre(x)

    def forward_visual(
        self,
        images: torch.Tensor,
        taps: Sequence[int] | None = None,
        stream_modules: Mapping[int, StreamModule] | None = None,
        vv_start: int | None = None,
        checkpoint_frozen_blocks: bool = False,
    ) -> VisualFeatures:
        """Run the visual tower.

        images: (B, 3, S, S) normalised, S = self.image_size, on the backbone's device.
        taps: 1-based blocks whose output hidden state is returned (default D/4..D).
        stream_modules: block -> module replacing the hidden state after that block. It
            returns a tensor (B, 1 + L, d) or an object with a ``hidden`` attribute.
        vv_start: first block of the parallel V-V stream (None = no V-V stream).
        checkpoint_frozen_blocks: recompute the activations of the frozen blocks after the
            first in-stream module in the backward pass (less memory while training).
        Blocks before the first in-stream module always run without autograd.
        """
        taps = tuple(taps) if taps is not None else self.default_taps()
        stream_modules = dict(stream_modules or {})
        for block_index in list(taps) + list(stream_modules):
            if not 1 <= block_index <= self.depth:
                raise ValueError(f"block {block_index} outside 1..{self.depth}")
        first_trainable = min(stream_modules) if stream_modules else self.depth + 1
        blocks = self.clip.visual.transformer.resblocks

        hidden: dict[int, torch.Tensor] = {}
        vv_hidden: dict[int, torch.Tensor] = {}
        stream_outputs: dict[int, Any] = {}
        vv = None
        with torch.no_grad():
            x = self._embed_patches(images)
        for index, block in enumerate(blocks, start=1):
            if vv_start is not None and index == vv_start:
                vv = x
            frozen_only = index < first_trainable
            with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_only):
                with_vv = vv is not None
                if checkpoint_frozen_blocks and not frozen_only and torch.is_grad_enabled():
                    x, update = activation_checkpoint(
                        run_block, block, x, with_vv, self.fused_attention, use_reentrant=False
                    )
                else:
                    x, update = run_block(block, x, with_vv, self.fused_attention)
                if update is not None:
                    vv = vv + update
            if index in stream_modules:
                result = stream_modules[index](x)
                stream_outputs[index] = result
                x = result if isinstance(result, torch.Tensor) else result.hidden
            if index in taps:
                hidden[index] = x
                if vv is not None:
                    vv_hidden[index] = vv
        return VisualFeatures(
            hidden=hidden,
            vv_hidden=vv_hidden,
            stream_outputs=stream_outputs,
            image_embedding=self.project_tokens(x[:, 0]),
            grid=self.grid,
        )

    def project_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """ln_post + CLIP's visual projection: (..., d) -> (..., d_t)."""
        visual = self.clip.visual
        return visual.ln_post(tokens) @ visual.proj

    # ------------------------------------------------------------------ text
    @functools.cached_property
    def tokenizer(self) -> Callable[[list[str]], torch.Tensor]:
        """The model's OpenCLIP tokenizer, built once per backbone (building it reads the BPE table)."""
        return open_clip.get_tokenizer(self.config.model_name)

    @property
    def context_length(self) -> int:
        """C: number of token positions of the text transformer."""
        return self.clip.positional_embedding.shape[0]

    @property
    def text_width(self) -> int:
        """d_text: width of the token embeddings fed to the text transformer."""
        return self.clip.token_embedding.weight.shape[1]

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """(N,) strings -> (N, context_length) token ids."""
        return self.tokenizer(list(texts))

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(N, context_length) token ids -> (N, d_t) text features (not normalised)."""
        return self.clip.encode_text(token_ids.to(self.clip.token_embedding.weight.device))

    def token_embeddings(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(N, C) token ids -> (N, C, d_text) input embeddings of the text transformer."""
        return self.clip.token_embedding(token_ids.to(self.clip.token_embedding.weight.device))

    def encode_text_embeddings(self, embeddings: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """Encode prompts given as token embeddings (learned prompts).

        embeddings: (N, C, d_text) token embeddings including SOT/EOT and padding.
        eot_index: (N,) position of the end-of-text token of each prompt.
        Returns (N, d_t) text features (not normalised).
        Positions after the last EOT are dropped before the transformer: under the causal
        mask they never reach an EOT token, so the features are unchanged. Under
        ``torch.compile`` the whole context runs instead (a length read from the data would
        be a host sync, and a new graph for every prompt length).
        """
        clip = self.clip
        length = clip.attn_mask.shape[0] if is_compiling() else int(eot_index.max()) + 1
        x = embeddings[:, :length] + clip.positional_embedding[:length].to(embeddings.dtype)
        transformer = clip.transformer
        if self.fused_attention and getattr(transformer, "batch_first", False) and all(
            supports_fused_attention(block) for block in transformer.resblocks
        ):
            # SDPA's own causal mask: no float mask to cast (torch 2.1 refuses a float
            # mask beside bf16 queries under autocast), and the fused causal kernels.
            for block in transformer.resblocks:
                x, _ = run_block(block, x, with_vv=False, causal=True)
        else:
            x = transformer(x, attn_mask=clip.attn_mask[:length, :length])
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_index]
        projection = clip.text_projection
        return projection(x) if isinstance(projection, nn.Linear) else x @ projection


def create_backbone(config: BackboneConfig | None = None, **overrides: Any) -> ClipBackbone:
    """Build a frozen :class:`ClipBackbone` (``create_backbone(model_name=..., weights=...)``)."""
    config = config or BackboneConfig()
    if overrides:
        config = BackboneConfig(**{**config.to_dict(), **overrides})
    # Store the seed explicitly ("random" -> "random:0"), so checkpoints and provenance name it.
    config = BackboneConfig(**{**config.to_dict(), "weights": canonical_weights(config.weights)})
    clip_model, description = build_clip(config.model_name, config.weights, config.cache_dir, config.quick_gelu)
    return ClipBackbone(clip_model, config, description)
