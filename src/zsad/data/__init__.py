"""Data sets for zero-shot anomaly detection: every supported layout behind one ``kind:PATH`` spec.

>>> dataset = build_dataset("mvtec:/data/mvtec_ad", classes=["bottle"], image_size=518)
>>> loader = torch.utils.data.DataLoader(dataset, batch_size=8, collate_fn=collate)
"""

from zsad.data.dataset import AnomalyDataset, Batch, collate
from zsad.data.duplicates import find_duplicate_files
from zsad.data.factory import DATASET_KINDS, SPLITS, build_dataset, parse_data_spec
from zsad.data.layouts import DataLayoutError
from zsad.data.sample import Sample

__all__ = [
    "DATASET_KINDS",
    "SPLITS",
    "AnomalyDataset",
    "DataLayoutError",
    "Sample",
    "build_dataset",
    "Batch",
    "collate",
    "find_duplicate_files",
    "parse_data_spec",
]
