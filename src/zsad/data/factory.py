"""From a ``kind:PATH`` spec to an :class:`AnomalyDataset`."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidInputError
from ..maps import REFERENCE_SIZE
from .dataset import AnomalyDataset
from .layouts import LAYOUTS, DataLayoutError, LayoutSamples
from .sample import SPLITS, Sample
from .spec import DATASET_KINDS, parse_data_spec

__all__ = ["DATASET_KINDS", "available_splits", "build_dataset", "kind_domain", "parse_data_spec"]


def kind_domain(kind: str) -> str | None:
    """The domain (``settings.DOMAINS``) of a data-set kind's images; None for the kinds that
    read the user's own folders (``folder``, ``manifest``), whose domain is not known."""
    if kind not in LAYOUTS:
        raise InvalidInputError(f"unknown data-set kind {kind!r}; kinds: {', '.join(DATASET_KINDS)}")
    return LAYOUTS[kind].domain


def build_dataset(
    spec: str,
    classes: list[str] | None = None,
    image_size: int = REFERENCE_SIZE,
    split: str = "test",
) -> AnomalyDataset:
    """Read the data set named by ``spec`` (``"kind:PATH"``).

    Args:
        spec: e.g. ``"mvtec:/data/mvtec_ad"``, ``"manifest:list.jsonl"``.
        classes: categories to keep (None: all); an unknown name raises, naming the available ones.
        image_size: output side ``S`` of images and masks.
        split: ``"test"`` (the labelled test split), ``"train"`` (normal training images,
            where the layout has them), ``"validation"`` (held-out normal images, where the
            layout has them), ``"all"`` (the three), or one of the layout's unlabelled
            splits (``Layout.predict_only_splits``: MVTec AD 2's ``"test_private"``), whose
            images have label None.

    Items are resized and CLIP-normalised (``EvalTransform``); training swaps in
    ``ResizeTransform`` and augments on its device.

    Raises:
        ValueError (DataLayoutError for layout problems): unknown kind/split/class, a missing
        folder, no images, a split the layout lacks, a test split asked of a tree that
        holds only unlabelled splits, or anomalous images without masks in a set that has
        masks.
    """
    kind, root = parse_data_spec(spec)
    layout = LAYOUTS[kind]
    if split not in SPLITS and split not in layout.predict_only_splits:
        extra = f" (and for {kind}, unlabelled: {', '.join(layout.predict_only_splits)})" if layout.predict_only_splits else ""
        raise InvalidInputError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}{extra}")
    found = layout.read(root)
    samples = _select_split(found, split, kind, root)
    samples = _select_classes(samples, classes, kind, root)
    if not samples:
        raise DataLayoutError(
            f"{root}: no images found for {kind} split {split!r}; expected layout: {layout.description}"
        )
    if found.has_masks:
        _check_masks_present(samples, root)
    return AnomalyDataset(kind, root, samples, found.has_masks, image_size)


def available_splits(spec: str) -> tuple[str, ...]:
    """The splits the tree at ``spec`` (``"kind:PATH"``) holds, in SPLITS order then its
    unlabelled ones: ``"test"`` when it has labelled test images, ``"train"`` /
    ``"validation"`` when the layout found those folders (MVTec AD 2's and MVTec LOCO's
    ``validation/good``), e.g. to pick the normal images `zsad calibrate` uses."""
    kind, root = parse_data_spec(spec)
    found = LAYOUTS[kind].read(root)
    present = {"test": bool(found.test), "train": found.train is not None, "validation": found.validation is not None}
    return (*(split for split, here in present.items() if here), *found.predict_only)


def _select_split(found: LayoutSamples, split: str, kind: str, root: Path) -> list[Sample]:
    if split in found.predict_only:
        return found.predict_only[split]
    if split == "test":
        if not found.test and found.predict_only:
            raise DataLayoutError(_only_unlabelled_message(found, kind, root))
        return found.test
    if split == "validation":
        if found.validation is None:
            raise DataLayoutError(f"{root}: the {kind} layout here has no validation split; use split='test' or 'train'")
        return found.validation
    if split == "all":
        return found.test + (found.train or []) + (found.validation or [])
    if found.train is None:
        raise DataLayoutError(f"{root}: the {kind} layout here has no train split; use split='test' or 'all'")
    return found.train


def _only_unlabelled_message(found: LayoutSamples, kind: str, root: Path) -> str:
    names = ", ".join(f"{name} ({len(samples)} images)" for name, samples in found.predict_only.items())
    first = next(iter(found.predict_only))
    return (
        f"{root}: no labelled test images, only unlabelled splits: {names}. They have no ground truth "
        f"(predict only): list them with `zsad data info {kind}:{root} --split {first}` and score them "
        f"with `zsad predict` on their folders; `zsad test` needs labelled images"
    )


def _select_classes(samples: list[Sample], classes: list[str] | None, kind: str, root: Path) -> list[Sample]:
    if classes is None:
        return samples
    available = sorted({s.class_name for s in samples})
    unknown = [name for name in classes if name not in available]
    if unknown:
        raise InvalidInputError(f"unknown classes {unknown} for {kind}:{root}; available: {available}")
    wanted = set(classes)
    return [s for s in samples if s.class_name in wanted]


def _check_masks_present(samples: list[Sample], root: Path) -> None:
    missing = [s.image_path for s in samples if s.label == 1 and s.mask_path is None]
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        raise DataLayoutError(
            f"{root}: {len(missing)} anomalous images have no mask file although the set has masks "
            f"(e.g. {shown}); fix the masks or select classes that have them"
        )
