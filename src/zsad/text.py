"""Text side: class names for prompts, the fixed prompt ensemble of the spec, and
learned prompts assembled in token-embedding space.

The prompt table (templates x states) and the class-name table are data files in
``zsad/resources``; users override class names with ``--class-name`` (one name for
every image) or ``--class-names FILE`` (a JSON or YAML mapping of category keys).

Prompt-learning methods build ``[SOT][learned][class-name tokens][learned][EOT][pad]``
with :func:`build_learned_prompts` (or, to keep the tokenizer out of a compiled graph,
:func:`prompt_layout` on the host and :func:`fill_prompt_layout` in the graph) and encode it with the frozen text transformer
through :func:`encode_learned_prompts`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InvalidInputError, MissingInputError

UNKNOWN_CLASS_NAME = "object"


def _resource_json(name: str) -> dict:
    text = (resources.files("zsad") / "resources" / name).read_text(encoding="utf-8")
    return {key: value for key, value in json.loads(text).items() if not key.startswith("_")}


def humanise_category(key: str) -> str:
    """Fallback for categories missing from the table: ``Woven_068`` -> ``woven``,
    ``my-part`` -> ``my part``; keys without letters become ``object``."""
    words = [word for word in re.split(r"[_\-\s]+", key.strip().lower()) if word]
    while words and words[-1].isdigit():
        words.pop()
    name = " ".join(words)
    return name if re.search(r"[a-z]", name) else UNKNOWN_CLASS_NAME


@dataclass(frozen=True)
class ClassNames:
    """Maps a data set's category key to the words used in the prompts.

    table: category key -> name (the bundled table, updated by a user file).
    override: one name used for every category (``--class-name``), or None.
    """

    table: Mapping[str, str]
    override: str | None = None

    @classmethod
    def load(cls, names_file: str | Path | None = None, override: str | None = None) -> "ClassNames":
        table = dict(_resource_json("class_names.json"))
        if names_file is not None:
            table.update(read_class_names_file(Path(names_file)))
        if override is not None and not override.strip():
            raise InvalidInputError("--class-name must not be empty")
        return cls(table=table, override=override.strip() if override else None)

    def resolve(self, key: str | None) -> str:
        if self.override:
            return self.override
        if not key:
            return UNKNOWN_CLASS_NAME
        return self.table.get(key, self.table.get(key.lower(), humanise_category(key)))


def read_class_names_file(path: Path) -> dict[str, str]:
    """Read a user's ``{category key: class name}`` mapping from JSON or YAML."""
    if not path.is_file():
        raise MissingInputError(f"class-names file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            mapping = yaml.safe_load(text)
        else:
            mapping = json.loads(text)
    except Exception as error:
        raise InvalidInputError(f"cannot parse class-names file {path}: {error}") from error
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in mapping.items()
    ):
        raise InvalidInputError(f"{path} must map category keys to non-empty class names (strings)")
    return {key: value.strip() for key, value in mapping.items()}


@dataclass(frozen=True)
class PromptEnsemble:
    """Templates x state phrases (MoECLIP Tab. 4)."""

    templates: tuple[str, ...]
    normal_states: tuple[str, ...]
    abnormal_states: tuple[str, ...]

    @classmethod
    def default(cls) -> "PromptEnsemble":
        table = _resource_json("prompts.json")
        return cls(
            templates=tuple(table["templates"]),
            normal_states=tuple(table["normal_states"]),
            abnormal_states=tuple(table["abnormal_states"]),
        )

    def sentences(self, class_name: str, abnormal: bool) -> list[list[str]]:
        """Per state, the sentences of every template: [state][template]."""
        states = self.abnormal_states if abnormal else self.normal_states
        return [[template.format(state.format(class_name)) for template in self.templates] for state in states]


class TextFeatureBank(nn.Module):
    """Normal / abnormal text features per class name, computed once with a frozen encoder.

    ``features(backbone, names)`` returns (N, 2, d_t) rows [T_N, T_A]: every sentence of a
    state group (templates x state phrases) is encoded with the text projection and
    L2-normalised, the group is averaged and re-normalised (spec, "Text features").
    Computed features are kept in the ``bank`` buffer (moves with ``.to()``, part of a
    saved module).
    """

    def __init__(self, ensemble: PromptEnsemble | None = None):
        super().__init__()
        self.ensemble = ensemble or PromptEnsemble.default()
        self.names: list[str] = []
        self.register_buffer("bank", torch.empty(0), persistent=False)

    @torch.no_grad()
    def _encode_group(self, backbone, class_name: str, abnormal: bool) -> torch.Tensor:
        """-> (d_t,) normalised mean of the group's normalised sentence features."""
        sentences = [s for state in self.ensemble.sentences(class_name, abnormal) for s in state]
        encoded = F.normalize(backbone.encode_text(backbone.tokenize(sentences)).float(), dim=-1)
        return F.normalize(encoded.mean(dim=0), dim=-1)

    def features(self, backbone, class_names: Sequence[str]) -> torch.Tensor:
        """class_names: (N,) prompt words -> (N, 2, d_t) on the bank's device."""
        missing = [name for name in dict.fromkeys(class_names) if name not in self.names]
        if missing:
            new = torch.stack(
                [torch.stack([self._encode_group(backbone, n, False), self._encode_group(backbone, n, True)]) for n in missing]
            )
            self.bank = torch.cat([self.bank.reshape(-1, *new.shape[1:]).to(new.device), new])
            self.names.extend(missing)
        index = torch.tensor([self.names.index(name) for name in class_names], device=self.bank.device)
        return self.bank.index_select(0, index)


@dataclass(frozen=True)
class LearnedPrompts:
    """Prompts in token-embedding space, ready for the frozen text transformer.

    embeddings: (N, C, d_text) token embeddings with SOT, EOT and padding, C = context length.
    eot_index: (N,) position of each prompt's end-of-text token.
    """

    embeddings: torch.Tensor
    eot_index: torch.Tensor

    @classmethod
    def concat(cls, parts: Sequence["LearnedPrompts"]) -> "LearnedPrompts":
        """Stack prompt batches (e.g. with learned blocks of different lengths) so that
        one text-encoder call serves them all; rows keep the order of ``parts``."""
        return cls(
            embeddings=torch.cat([part.embeddings for part in parts]),
            eot_index=torch.cat([part.eot_index for part in parts]),
        )


def _learned_part(tokens: torch.Tensor | None, count: int, width: int, name: str) -> torch.Tensor | None:
    """Validate a block of learned tokens: None (empty side) or (N, length, d_text)."""
    if tokens is None:
        return None
    if tokens.ndim != 3 or tokens.shape[0] != count or tokens.shape[2] != width:
        raise ValueError(f"{name} tokens must be (N={count}, length, d_text={width}), got {tuple(tokens.shape)}")
    return tokens


class PromptLayout(NamedTuple):
    """The word-dependent part of a batch of learned prompts, built on the host (tokenizer)
    before any compiled graph: where each prompt's tokens and learned slots lie.

    token_ids: (N, C) SOT, class-name tokens, EOT, and the padding id 0 elsewhere
        (including the learned slots, which :func:`fill_prompt_layout` overwrites).
    learned: (N, C) bool, the learned slots: per row the prefix, then the suffix.
    eot_index: (N,) position of each prompt's end-of-text token.
    """

    token_ids: torch.Tensor
    learned: torch.Tensor
    eot_index: torch.Tensor

    def to(self, device: torch.device | str) -> "PromptLayout":
        return PromptLayout(*(part.to(device) for part in self))

    def repeat(self, times: int) -> "PromptLayout":
        """The N rows stacked ``times`` times: (times * N, ...)."""
        return PromptLayout(*(part.repeat(times, *([1] * (part.ndim - 1))) for part in self))


def prompt_layout(backbone, class_names: Sequence[str], prefix_length: int = 0, suffix_length: int = 0) -> PromptLayout:
    """The layout of ``[SOT][prefix][class-name tokens][suffix][EOT][pad...]`` per prompt:
    class_names (N,) words (an empty string adds none), ``prefix_length`` and
    ``suffix_length`` learned tokens on each side. Raises ValueError when a prompt does not
    fit the text encoder's context."""
    tokenizer, context = backbone.tokenizer, backbone.context_length
    count = len(class_names)
    ids = torch.zeros(count, context, dtype=torch.long)
    learned = torch.zeros(count, context, dtype=torch.bool)
    eot_index = torch.empty(count, dtype=torch.long)
    encoded_names = {name: tokenizer.encode(name) for name in dict.fromkeys(class_names)}
    for row, class_name in enumerate(class_names):
        name_ids = encoded_names[class_name]
        name_start = 1 + prefix_length
        suffix_start = name_start + len(name_ids)
        eot = suffix_start + suffix_length
        if eot >= context:
            raise InvalidInputError(
                f"prompt for class name {class_name!r} needs {eot + 1} tokens ({prefix_length} + "
                f"{len(name_ids)} + {suffix_length} plus SOT/EOT); the text encoder holds {context}"
            )
        ids[row, 0] = tokenizer.sot_token_id
        ids[row, eot] = tokenizer.eot_token_id
        eot_index[row] = eot
        # Only non-empty slices are written: the ONNX exporter (TorchScript) dies with SIGFPE
        # converting an assignment to an empty slice (a traced index_put of zero elements).
        if name_ids:
            ids[row, name_start:suffix_start] = torch.tensor(name_ids, dtype=torch.long)
        if prefix_length:
            learned[row, 1:name_start] = True
        if suffix_length:
            learned[row, suffix_start:eot] = True
    return PromptLayout(ids, learned, eot_index)


def fill_prompt_layout(
    backbone, layout: PromptLayout, prefix: torch.Tensor | None = None, suffix: torch.Tensor | None = None
) -> LearnedPrompts:
    """Token embeddings of the layout with its learned slots filled: prefix (N, P, d_text)
    and suffix (N, S, d_text), or None for an empty side, with P and S the lengths the
    layout was built for. Tensor work only (no tokenizer): gradients flow into the
    learned tokens."""
    embeddings = backbone.token_embeddings(layout.token_ids)
    parts = [part.to(embeddings) for part in (prefix, suffix) if part is not None]
    if parts:
        # masked_scatter fills the True positions row by row: each row's prefix, then its suffix.
        source = torch.cat(parts, dim=1)
        embeddings = embeddings.masked_scatter(layout.learned.to(embeddings.device).unsqueeze(-1), source)
    return LearnedPrompts(embeddings=embeddings, eot_index=layout.eot_index.to(embeddings.device))


def build_learned_prompts(
    backbone,
    class_names: Sequence[str],
    prefix: torch.Tensor | None = None,
    suffix: torch.Tensor | None = None,
) -> LearnedPrompts:
    """Assemble ``[SOT][prefix][class-name tokens][suffix][EOT][pad...]`` per prompt
    (:func:`prompt_layout`, then :func:`fill_prompt_layout`).

    backbone: a ClipBackbone (its tokenizer, token embedding and context length are used).
    class_names: (N,) words tokenised between the learned blocks (an empty string adds none).
    prefix, suffix: (N, P, d_text) and (N, S, d_text) learned token embeddings, or None for
        an empty side. Gradients flow from the result back into them.
    Padding positions hold the tokenizer's padding id (0), as in a tokenised sentence.
    """
    count, width = len(class_names), backbone.text_width
    prefix = _learned_part(prefix, count, width, "prefix")
    suffix = _learned_part(suffix, count, width, "suffix")
    prefix_length = 0 if prefix is None else prefix.shape[1]
    suffix_length = 0 if suffix is None else suffix.shape[1]
    return fill_prompt_layout(backbone, prompt_layout(backbone, class_names, prefix_length, suffix_length), prefix, suffix)


def encode_learned_prompts(backbone, prompts: LearnedPrompts) -> torch.Tensor:
    """Frozen text transformer on assembled prompts: -> (N, d_t) L2-normalised features
    (EOT token, ``ln_final``, text projection)."""
    return F.normalize(backbone.encode_text_embeddings(prompts.embeddings, prompts.eot_index), dim=-1)
