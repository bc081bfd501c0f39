"""Data sets for zero-shot anomaly detection: every supported layout behind one ``kind:PATH`` spec.

>>> dataset = build_dataset("mvtec:/data/mvtec_ad", classes=["bottle"], image_size=518)
>>> loader = torch.utils.data.DataLoader(dataset, batch_size=8, collate_fn=collate)
"""

from importlib import import_module

# Where each name lives; modules are imported on first use (torch only when needed).
_HOMES = {
    "AnomalyDataset": "dataset", "Batch": "dataset", "collate": "dataset",
    "find_duplicate_files": "duplicates",
    "DATASET_KINDS": "spec", "SPLITS": "sample", "available_splits": "factory", "build_dataset": "factory", "parse_data_spec": "spec",
    "kind_domain": "factory",
    "DataLayoutError": "layouts",
    "Sample": "sample",
}

__all__ = [
    "DATASET_KINDS",
    "SPLITS",
    "AnomalyDataset",
    "Batch",
    "DataLayoutError",
    "Sample",
    "available_splits",
    "build_dataset",
    "collate",
    "find_duplicate_files",
    "kind_domain",
    "parse_data_spec",
]


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
