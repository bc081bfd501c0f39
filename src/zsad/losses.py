"""Losses shared by every method: focal and Dice on probability maps, their sum over a
list of maps for the images with a known mask, and image-level cross-entropy over the
images with a known label.

The segmentation losses take probabilities (not logits) because the methods produce
their maps as softmax probabilities over the {normal, anomalous} channels. A mask of
all -1 (no pixel label) and a label of -1 (unknown) add nothing to a loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def focal_loss(probs: Tensor, target: Tensor, gamma: float = 2.0, eps: float = 1e-6) -> Tensor:
    """Mean focal loss over all pixels of the batch (MoECLIP supp. Eq. B.3).

    ``loss = -mean_i (1 - p_i)^gamma * log(p_i)`` where ``p_i`` is the predicted
    probability of pixel ``i``'s true class. ``gamma = 0`` gives the negative
    log-likelihood. ``p_i`` is clamped to ``[eps, 1]`` before the log, so a pixel
    whose true-class probability is below ``eps`` contributes the constant
    ``-log(eps)`` (and no gradient).

    Args:
        probs: (B, C, H, W) class probabilities (softmax over C).
        target: (B, H, W) integer or bool class index per pixel (0 normal, 1 anomalous).
        gamma: focusing parameter (>= 0).
        eps: lower clamp for the probabilities.

    Returns:
        Scalar tensor.
    """
    if probs.dim() != 4:
        raise ValueError(f"probs must be (B, C, H, W), got shape {tuple(probs.shape)}")
    if target.shape != probs.shape[:1] + probs.shape[2:]:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match probs {tuple(probs.shape)} "
            "(expected (B, H, W))"
        )
    if target.is_floating_point():
        raise TypeError("target must hold integer or bool class indices; binarise float masks first")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    true_class_prob = probs.gather(1, target.long().unsqueeze(1)).squeeze(1)
    true_class_prob = true_class_prob.clamp(min=eps, max=1.0)
    per_pixel = -((1.0 - true_class_prob) ** gamma) * torch.log(true_class_prob)
    return per_pixel.mean()


def dice_loss(prob: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """Soft Dice loss, computed per image then averaged over the batch (supp. Eq. B.4).

    ``loss_b = 1 - (2 * sum(y * p) + eps) / (sum(y) + sum(p) + eps)`` per image ``b``,
    returned as the mean over ``b``. The additive smoothing ``eps`` (default 1,
    i.e. one pixel's worth) keeps the loss defined for an empty mask with an
    empty prediction (loss 0) and softens the loss on tiny defects. ``eps = 0``
    gives the exact Eq. B.4 (undefined when both mask and prediction are empty).

    Args:
        prob: (B, H, W) probability of the anomalous class (any trailing shape works).
        target: same shape as ``prob``, ground truth in {0, 1} (bool, int or float).
        eps: additive smoothing in numerator and denominator (>= 0).

    Returns:
        Scalar tensor.
    """
    if prob.shape != target.shape:
        raise ValueError(f"prob {tuple(prob.shape)} and target {tuple(target.shape)} differ in shape")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    prob = prob.flatten(1)
    target = target.flatten(1).to(prob.dtype)
    intersection = (prob * target).sum(dim=1)
    total = prob.sum(dim=1) + target.sum(dim=1)
    dice = (2.0 * intersection + eps) / (total + eps)
    return (1.0 - dice).mean()


def known_masks(masks: Tensor) -> Tensor:
    """(B,) bool: the images whose (B, 1, H, W) mask is a real label, not all -1."""
    return masks.flatten(1)[:, 0] >= 0


def segmentation_loss(maps: Sequence[Tensor] | Tensor, masks: Tensor, dice_normal_channel: bool = False) -> Tensor:
    """Sum over ``maps`` of focal + Dice loss, on the images with a known mask.

    The Dice term compares the anomalous channel with the mask; with
    ``dice_normal_channel`` it also compares the normal channel with 1 - mask (the
    MoECLIP authors' released loss: two Dice terms per map).

    Args:
        maps: (B, 2, H, W) probabilities over {normal, anomalous}, one per map; or all M
            maps in one (B, M, 2, H, W) tensor, whose loss is computed in one call each:
            focal and Dice are means over equally sized maps (over pixels, over images),
            so their sum over the M maps is M x their value on the maps stacked along the
            batch (the same value, up to rounding, with a few kernels instead of M times).
        masks: (B, 1, H, W) in {0, 1}; all -1 for an image without a pixel label.

    Returns:
        Scalar tensor; 0 (no gradient) when no image of the batch has a mask.
    """
    known = known_masks(masks)
    if isinstance(maps, Tensor):
        if not known.any():
            return maps.new_zeros(())
        count = maps.shape[1]
        stacked = maps[known].flatten(0, 1)  # (B' M, 2, H, W), image b's maps consecutive
        target = masks[known, 0].round().long().repeat_interleave(count, dim=0)  # (B' M, H, W)
        return count * (focal_loss(stacked, target) + _dice_terms(stacked, target, dice_normal_channel))
    total = maps[0].new_zeros(())
    if known.any():
        target = masks[known, 0].round().long()
        for probs in maps:
            total = total + focal_loss(probs[known], target) + _dice_terms(probs[known], target, dice_normal_channel)
    return total


def _dice_terms(probs: Tensor, target: Tensor, normal_channel: bool) -> Tensor:
    """Dice of the anomalous channel of (B, 2, H, W) ``probs`` against the (B, H, W) class
    map ``target``, plus, with ``normal_channel``, Dice of the normal channel against its
    complement."""
    anomalous = dice_loss(probs[:, 1], target.float())
    return anomalous + dice_loss(probs[:, 0], 1.0 - target.float()) if normal_channel else anomalous


def image_classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of image logits on the images with a known label.

    Args:
        logits: (B, C) class logits (C = 2: normal, anomalous).
        labels: (B,) class indices; -1 = unknown (skipped).

    Returns:
        Scalar tensor; 0 when no label of the batch is known.
    """
    known = labels >= 0
    if not known.any():
        return logits.new_zeros(())
    return F.cross_entropy(logits[known], labels[known].long())
