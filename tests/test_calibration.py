"""Thresholds from normal images (split conformal), p-values, pixel thresholds (conformal
risk control) and the calibration file's identity check.

The statistical tests use synthetic score distributions: the guarantees are about
exchangeable scores, whatever produced them. Each has a negative control (a threshold
one rank too low, anomalous scores) that the same check rejects, so they can fail.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from zsad.calibration import (
    Calibration,
    CalibrationMismatchError,
    ClassCalibration,
    PixelTail,
    TooFewNormalImagesError,
    calibrate_class,
    calibrated_rates,
    conformal_rank,
    image_threshold,
    load_calibration,
    min_normal_images,
    p_values,
    pixel_threshold,
)
from zsad.errors import InvalidInputError, MissingInputError

ALPHA, N_CALIBRATION, N_HELD_OUT = 0.05, 200, 2000


def _normal_scores(rng: np.random.Generator, size) -> np.ndarray:
    """A skewed score distribution, nothing like uniform (a gamma, squashed into (0, 1))."""
    return 1.0 - np.exp(-rng.gamma(2.0, 0.15, size=size))


# ----------------------------------------------------------------------------- ranks
@pytest.mark.parametrize("alpha", [0.5, 0.3, 0.2, 0.1, 0.07, 0.05, 0.01, 0.001])
def test_min_normal_images_is_the_smallest_n_whose_conformal_rank_fits(alpha):
    brute = next(n for n in range(1, 5000) if math.ceil((n + 1) * (1 - alpha) - 1e-9) <= n)
    assert min_normal_images(alpha) == brute
    assert conformal_rank(brute, alpha) <= brute and conformal_rank(brute - 1, alpha) > brute - 1


def test_ranks_are_exact_for_decimal_rates():
    assert conformal_rank(200, 0.05) == 191  # ceil(201 * 0.95) = ceil(190.95)
    assert conformal_rank(99, 0.01) == 99  # 100 * 0.99 is exactly 99, not 99.00000000000001
    assert min_normal_images(0.01) == 99 and min_normal_images(0.05) == 19 and min_normal_images(0.001) == 999


def test_image_threshold_flags_exactly_the_scores_above_the_kth_smallest():
    rng = np.random.default_rng(0)
    scores = rng.permutation(_normal_scores(rng, 200))
    threshold = image_threshold(scores, ALPHA)
    k = conformal_rank(200, ALPHA)
    kth = np.sort(scores)[k - 1]
    assert kth < threshold and np.nextafter(kth, np.inf) == threshold
    assert int((scores >= threshold).sum()) == 200 - k  # 9 of the calibration images


def test_too_few_normal_images_are_refused_with_the_number_needed():
    with pytest.raises(TooFewNormalImagesError, match="at least 19 normal images.*got 18") as error:
        image_threshold(np.linspace(0, 1, 18), 0.05)
    assert isinstance(error.value, InvalidInputError)
    image_threshold(np.linspace(0, 1, 19), 0.05)  # 19 is enough
    with pytest.raises(TooFewNormalImagesError, match="99"):
        pixel_threshold(np.zeros((50, 4, 4)), 0.01)


# ----------------------------------------------------------------------------- FPR
def _held_out_fpr(seed: int, rank_shift: int = 0, decimals: int | None = None) -> float:
    rng = np.random.default_rng(seed)
    calibration, held_out = _normal_scores(rng, N_CALIBRATION), _normal_scores(rng, N_HELD_OUT)
    if decimals is not None:  # a coarse score scale: many ties
        calibration, held_out = np.round(calibration, decimals), np.round(held_out, decimals)
    if rank_shift == 0:
        threshold = image_threshold(calibration, ALPHA)
    else:  # negative control: the threshold one rank lower (the usual off-by-one)
        threshold = np.nextafter(np.sort(calibration)[conformal_rank(N_CALIBRATION, ALPHA) - 1 + rank_shift], np.inf)
    return float((held_out >= threshold).mean())


def _per_seed_bound(quantile: float = 0.999) -> float:
    """The ``quantile`` of the held-out FPR of one seed: Binomial(N_HELD_OUT, r) / N_HELD_OUT with
    r ~ Beta(n + 1 - k, k), the exact law of a conformal threshold's rate (continuous scores)."""
    k = conformal_rank(N_CALIBRATION, ALPHA)
    law = stats.betabinom(N_HELD_OUT, N_CALIBRATION + 1 - k, k)
    return float(law.ppf(quantile) / N_HELD_OUT)


def test_threshold_at_005_from_200_normal_images_holds_on_2000_new_ones_over_seeds(capsys):
    fprs = [_held_out_fpr(seed) for seed in range(10)]
    with capsys.disabled():
        print(f"\nobserved FPR at alpha={ALPHA}, n={N_CALIBRATION}, {N_HELD_OUT} held-out, seeds 0-9: "
              + " ".join(f"{f:.4f}" for f in fprs) + f"; mean {np.mean(fprs):.4f}; per-seed bound {_per_seed_bound():.4f}")
    assert all(fpr <= _per_seed_bound() for fpr in fprs)
    assert np.mean(fprs) <= ALPHA + 3 * 0.0161 / math.sqrt(len(fprs))  # sd of one seed's rate: ~0.0161


def test_the_expected_fpr_is_at_most_alpha_and_an_off_by_one_rank_is_caught():
    """Averaged over 400 calibration sets the rate is (n + 1 - k) / (n + 1) = 10/201 = 0.0498:
    inside alpha by less than the slack, while a threshold one rank lower (11/201 = 0.0547)
    lies outside it."""
    seeds = range(1000, 1400)
    slack = 3 * 0.0161 / math.sqrt(len(seeds))  # 0.0024
    mean = np.mean([_held_out_fpr(seed) for seed in seeds])
    assert abs(mean - 10 / 201) < slack and mean <= ALPHA + slack
    assert np.mean([_held_out_fpr(seed, rank_shift=-1) for seed in seeds]) > ALPHA + slack


def test_ties_do_not_break_the_bound():
    """Scores on a coarse grid (one decimal): "score >= threshold" flags only scores strictly
    above the k-th smallest, so the rate stays below alpha; flagging the k-th value itself
    would not."""
    seeds = range(2000, 2200)
    mean = np.mean([_held_out_fpr(seed, decimals=1) for seed in seeds])
    assert mean <= ALPHA
    at_kth = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        calibration = np.round(_normal_scores(rng, N_CALIBRATION), 1)
        held_out = np.round(_normal_scores(rng, N_HELD_OUT), 1)
        at_kth.append((held_out >= np.sort(calibration)[conformal_rank(N_CALIBRATION, ALPHA) - 1]).mean())
    assert np.mean(at_kth) > ALPHA + 0.01


# ----------------------------------------------------------------------------- p-values
def test_p_values_follow_their_definition():
    calibration = np.array([0.1, 0.2, 0.2, 0.5])
    # (1 + #{calibration >= s}) / (n + 1)
    assert p_values(calibration, [0.0, 0.2, 0.3, 0.5, 0.9]).tolist() == [1.0, 0.8, 0.4, 0.4, 0.2]


def _normal_p_values(seed: int, n_replicates: int = 2000) -> np.ndarray:
    """One new normal image per replicate, each against its own calibration set of 200."""
    rng = np.random.default_rng(seed)
    calibration = _normal_scores(rng, (n_replicates, N_CALIBRATION))
    new = _normal_scores(rng, n_replicates)
    return (1.0 + (calibration >= new[:, None]).sum(axis=1)) / (N_CALIBRATION + 1)


def test_p_values_of_normal_images_are_uniform(capsys):
    results = [stats.kstest(_normal_p_values(seed), "uniform").pvalue for seed in range(5)]
    with capsys.disabled():
        print("\nKS p-values (2000 normal p-values each vs uniform), seeds 0-4: " + " ".join(f"{p:.3f}" for p in results))
    assert min(results) > 0.001
    p = np.concatenate([_normal_p_values(seed) for seed in range(5)])
    for level in (0.01, 0.05, 0.1, 0.5):  # valid: P(p <= x) <= x (+ sampling)
        assert (p <= level).mean() <= level + 3 * math.sqrt(level / p.size)


def test_p_values_of_anomalous_images_are_not_uniform():
    rng = np.random.default_rng(7)
    calibration = _normal_scores(rng, (2000, N_CALIBRATION))
    anomalous = _normal_scores(rng, 2000) + 0.1
    p = (1.0 + (calibration >= anomalous[:, None]).sum(axis=1)) / (N_CALIBRATION + 1)
    assert stats.kstest(p, "uniform").pvalue < 1e-6


# ----------------------------------------------------------------------------- pixels
def _pixel_threshold_by_definition(maps: np.ndarray, alpha: float) -> float:
    """The smallest candidate t (just above a pixel value, or the smallest value) with
    (n * mean_i fraction_i(map >= t) + 1) / (n + 1) <= alpha, by brute force."""
    n = len(maps)
    values = np.unique(maps)
    candidates = np.concatenate([[values[0]], np.nextafter(values, np.inf)])
    for t in np.sort(candidates):
        risk = np.mean([(m >= t).mean() for m in maps])
        if (n * risk + 1) / (n + 1) <= alpha + 1e-12:
            return float(t)
    raise AssertionError("no feasible threshold")


@pytest.mark.parametrize("alpha,n", [(0.1, 9), (0.1, 30), (0.25, 12), (0.05, 40)])
def test_pixel_threshold_is_the_smallest_that_meets_the_risk_condition(alpha, n):
    rng = np.random.default_rng(n)
    maps = np.round(rng.random((n, 6, 5)), 2)  # ties across pixels
    assert pixel_threshold(maps, alpha) == _pixel_threshold_by_definition(maps, alpha)


def test_pixel_tail_streamed_in_batches_equals_all_maps_at_once():
    rng = np.random.default_rng(3)
    maps = rng.random((45, 8, 8))
    tail = PixelTail(50, 0.05, 64)  # made for more images than come (unreadable files)
    for start in range(0, 45, 7):
        tail.add(maps[start : start + 7])
    assert tail.threshold() == pixel_threshold(maps, 0.05)
    assert tail.capacity <= 0.05 * 51 * 64 + 1  # keeps the tail, not every pixel


def _smooth_maps(rng: np.random.Generator, count: int, side: int = 16) -> np.ndarray:
    """Spatially correlated maps with an image-level offset: pixels of one map are far from
    exchangeable, whole maps are."""
    noise = rng.normal(size=(count, side + 4, side + 4))
    kernel = np.ones((5, 5)) / 25
    smooth = np.stack([np.real(np.fft.ifft2(np.fft.fft2(n) * np.fft.fft2(kernel, n.shape)))[4:, 4:] for n in noise])
    return smooth + rng.normal(0, 0.3, size=(count, 1, 1))


def test_expected_fraction_of_a_new_normal_maps_pixels_flagged_is_at_most_alpha():
    alpha, rates = 0.05, []
    for seed in range(150):
        rng = np.random.default_rng(seed)
        threshold = pixel_threshold(_smooth_maps(rng, 40), alpha)
        rates.append((_smooth_maps(rng, 1)[0] >= threshold).mean())
    assert np.mean(rates) <= alpha + 3 * np.std(rates) / math.sqrt(len(rates))
    assert np.mean(rates) > alpha / 3  # and not vacuous (the threshold is not above every pixel)


# ----------------------------------------------------------------------------- file
def _identity(**changes) -> dict:
    identity = {
        "method": "moeclip", "method_config": {"rank": 4}, "backbone": {"model_name": "zsad-tiny", "weights": "random:0", "image_size": 64},
        "method_state": "abc", "precision": "fp32",
    }
    for key, value in changes.items():
        identity[key] = value
    return identity


def _calibration() -> Calibration:
    rng = np.random.default_rng(0)
    scores, maps = _normal_scores(rng, 30), rng.random((30, 4, 4))
    tail = PixelTail(30, 0.1, 16)
    tail.add(maps)
    return Calibration(identity=_identity(), classes={"metal_nut": calibrate_class("metal nut", scores, tail, 0.1)}, source="good/")


def test_a_calibration_file_round_trips(tmp_path):
    calibration = _calibration()
    path = calibration.save(tmp_path / "calibration.json")
    again = load_calibration(path)
    assert again == calibration
    entry = again.classes["metal_nut"]
    assert entry.n_images == 30 and entry.scores == sorted(entry.scores)
    assert entry.expected_false_positive_rate == pytest.approx(3 / 31)  # k = ceil(31 * 0.9) = 28


def test_a_calibration_file_is_refused_for_another_model_naming_the_fields(tmp_path):
    calibration = _calibration()
    calibration.check_fits(_identity(), "c.json")  # the same model
    other = _identity(backbone={"model_name": "zsad-tiny", "weights": "random:0", "image_size": 96}, method_state="def")
    with pytest.raises(CalibrationMismatchError, match="calibrated for another model") as error:
        calibration.check_fits(other, "c.json")
    message = str(error.value)
    assert "backbone.image_size: requested 96, the calibration file has 64" in message
    assert "method_state: requested 'def', the calibration file has 'abc'" in message
    assert "method:" not in message.replace("method_state", "")  # only the differing fields
    with pytest.raises(CalibrationMismatchError, match="no calibration for the prompt words 'screw'"):
        calibration.for_words("screw", "c.json")
    with pytest.raises(CalibrationMismatchError, match="no calibration for the classes bottle"):
        calibration.for_classes(["metal_nut", "bottle"], "c.json")


def test_unreadable_calibration_files_get_one_clear_error(tmp_path):
    with pytest.raises(MissingInputError, match="zsad calibrate"):
        load_calibration(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(InvalidInputError, match="not a zsad calibration file"):
        load_calibration(tmp_path / "bad.json")


def test_calibrated_rates_count_images_and_pixels():
    entry = ClassCalibration("x", 0.1, image_threshold=0.5, pixel_threshold=0.5, scores=[0.1, 0.2])
    scores, labels = np.array([0.4, 0.6, 0.7, 0.3, 0.9]), np.array([0, 0, 1, 1, -1])
    maps = np.zeros((5, 2, 2))
    maps[1, 0, 0] = 0.8  # one of the 8 pixels of the normal images
    maps[2, :, 0] = 0.9  # two of the three defect pixels of image 2
    masks = np.zeros((5, 2, 2), dtype=bool)
    masks[2, :, 0] = masks[2, 0, 1] = True
    rates = calibrated_rates(scores, labels, entry, [(maps[:3], masks[:3]), (maps[3:], masks[3:])])
    assert rates["fpr"] == 0.5 and rates["recall"] == 0.5
    assert rates["pixel_fpr"] == 1 / 8 and rates["pixel_recall"] == 2 / 3
    assert calibrated_rates(scores, labels, entry)["pixel_fpr"] is None
