"""Evaluation memory: maps spilled to disk give the same metrics as maps in memory."""
from __future__ import annotations

import numpy as np
import pytest

from zsad.engine.map_spill import SpilledMaps
from zsad.metrics import pixel_metrics, pixel_metrics_streamed


def _maps_and_masks(seed: int, n: int = 7, size: int = 24, decimals: int | None = 2):
    """float32 maps correlated with blob masks; rounding gives ties inside and across classes."""
    rng = np.random.default_rng(seed)
    masks = rng.random((n, size, size)) < 0.1
    masks[::3] = False  # normal images
    maps = (rng.random((n, size, size)) + 0.5 * masks).astype(np.float32)
    if decimals is not None:
        maps = np.round(maps, decimals).astype(np.float32)
    return maps, masks


def _spilled(tmp_path, maps, masks) -> SpilledMaps:
    store = SpilledMaps(tmp_path, "class", maps.shape[1:])
    for anomaly_map, mask in zip(maps, masks):
        store.append(anomaly_map, mask)
    store.close()
    return store


def test_spilled_maps_read_back_unchanged_in_chunks(tmp_path):
    maps, masks = _maps_and_masks(0, n=5, size=8, decimals=None)
    store = _spilled(tmp_path, maps, masks)
    chunks = list(store.chunks(chunk_bytes=2 * 8 * 8 * 4))  # two maps a chunk
    assert [len(m) for m, _ in chunks] == [2, 2, 1]
    assert np.array_equal(np.concatenate([m for m, _ in chunks]), maps)
    assert np.array_equal(np.concatenate([k for _, k in chunks]), masks)
    with pytest.raises(ValueError, match="do not match"):
        SpilledMaps(tmp_path, "other", (8, 8)).append(np.zeros((4, 4)), np.zeros((4, 4)))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("decimals", [None, 1, 2])
@pytest.mark.parametrize("images_per_chunk", [1, 3, 100])
def test_streamed_pixel_metrics_equal_the_in_memory_ones_exactly(tmp_path, seed, decimals, images_per_chunk):
    maps, masks = _maps_and_masks(seed, decimals=decimals)
    store = _spilled(tmp_path, maps, masks)
    streamed = pixel_metrics_streamed(lambda: store.chunks(chunk_bytes=images_per_chunk * maps[0].nbytes))
    assert streamed == pixel_metrics(maps, masks)  # bit for bit, every metric
    assert all(value is not None for value in streamed.values())


def test_streamed_pixel_metrics_undefined_cases_and_nan(tmp_path):
    maps, masks = _maps_and_masks(1)
    no_defects = [(maps, np.zeros_like(masks))]
    assert set(pixel_metrics_streamed(lambda: iter(no_defects)).values()) == {None}
    maps[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pixel_metrics_streamed(lambda: iter([(maps, masks)]))
    with pytest.raises(ValueError, match="no images"):
        pixel_metrics_streamed(lambda: iter([]))


def test_evaluate_reports_the_metrics_of_the_maps_in_memory(tiny_backbone, tmp_path):
    import torch

    from zsad.data import build_dataset
    from zsad.data.synth import generate_mvtec_like
    from zsad.engine.evaluation import evaluate
    from zsad.methods import build_method
    from zsad.text import ClassNames

    generate_mvtec_like(tmp_path / "data", categories=["disc", "stripes"], n_train=0, n_good=2, n_defect_per_kind=1, size=64)
    dataset = build_dataset(f"mvtec:{tmp_path / 'data'}", image_size=64)
    detector = build_method("zeroshot", tiny_backbone, {})
    names = ClassNames.load()
    report = evaluate(detector, dataset, names, torch.device("cpu"), batch_size=3, show_progress=False,
                      spill_dir=tmp_path).report
    assert list(tmp_path.glob("zsad-maps-*")) == []  # the spill folder is removed
    for key in ("disc", "stripes"):
        subset = build_dataset(f"mvtec:{tmp_path / 'data'}", classes=[key], image_size=64)
        items = [subset[i] for i in range(len(subset))]
        with torch.no_grad():
            maps = detector(torch.stack([item["image"] for item in items]), [names.resolve(key)] * len(items))
        masks = np.stack([item["mask"][0].numpy() > 0.5 for item in items])
        expected = pixel_metrics(maps.anomaly_map.float().numpy(), masks)
        assert {k: report["per_class"][key][k] for k in expected} == expected
