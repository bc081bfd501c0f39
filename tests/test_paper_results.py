"""Every number of ``resources/paper_results.json`` equals its paper's Tab. 1, read from the paper text.

The papers' text lives beside the checkout (``../shared/papers``, or ``$ZSAD_PAPERS_DIR``); the
test skips without it. Each paper's Tab. 1 lists the method's own numbers last in every row,
image-level rows before pixel-level ones, so a data set's published values, in the paper's
metric order, are the last tuples of its rows, in order.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from zsad.engine.benchmark import paper_results

PAPERS_DIR = Path(os.environ.get("ZSAD_PAPERS_DIR", Path(__file__).resolve().parents[2] / "shared" / "papers"))
TUPLE = re.compile(r"\(\s*(\d+(?:\.\d+)?(?:\s*,\s*\d+(?:\.\d+)?)+)\s*\)")
TAG = re.compile(r"<[^>]+>")

# file, the line Tab. 1 starts at, the line after it, the metric order, row label per kind
PAPERS = {
    "moeclip": (
        "MoECLIP.md", "metric\tDomain\tDataset", "5. Experiments",
        ["image_auroc", "image_ap", "pixel_auroc", "pixel_ap"],
        {"mvtec": "MVTec-AD", "visa": "VisA", "btad": "BTAD", "rsdd": "RSDD", "dtd": "DTD-Synthetic",
         "headct": "Head CT", "kvasir": "Kvasir", "clinicdb": "ClinicDB", "bmad-brainmri": "Brain MRI",
         "bmad-liverct": "Liver CT", "bmad-retinaoct": "Retina OCT", "colondb": "ColonDB", "cvc300": "CVC-300",
         "endo": "Endo"},
    ),
    "promptmoe": (
        "PromptMoE.md", "Metric\tDatasets\tCLIP", "Table 1: ZSAD performance",
        ["image_auroc", "image_ap", "pixel_auroc", "pixel_aupro"],
        {"mvtec": "MVTec AD", "visa": "VisA", "mpdd": "MPDD", "btad": "BTAD", "ksdd": "SDD", "dagm": "DAGM",
         "dtd": "DTD-Synthetic", "headct": "HeadCT", "brainmri": "BrainMRI", "br35h": "Br35H", "isic": "ISIC",
         "colondb": "CVC-ColonDB", "clinicdb": "CVC-ClinicDB", "kvasir": "Kvasir", "endo": "Endo"},
    ),
    "wmoeclip": (
        "WMoE-CLIP.md", "| Domain | Metric | Dataset |", "3 Experiments",
        ["image_auroc", "image_f1max", "image_ap", "pixel_auroc", "pixel_aupro", "pixel_ap"],
        {"mvtec": "MVTec-AD", "visa": "VisA", "btad": "BTAD", "ksdd2": "KSDD2", "dagm": "DAGM",
         "dtd": "DTD-Synthetic", "headct": "HeadCT", "brainmri": "BrainMRI", "br35h": "Br35H", "isic": "ISIC",
         "colondb": "ColonDB", "clinicdb": "ClinicDB", "endo": "Endo", "kvasir": "Kvasir"},
    ),
}  # fmt: skip


def table_rows(text: str, start: str, end: str) -> dict[str, list[list[float]]]:
    """Row label -> the last tuple of each of its rows (in order) within the table's lines."""
    first = text.index(start)
    lines = text[first : text.index(end, first)].splitlines()
    rows: dict[str, list[list[float]]] = {}
    for line in lines:
        cells = [TAG.sub("", cell).strip() for cell in re.split(r"[\t|]", line)]
        tuples = [i for i, cell in enumerate(cells) if TUPLE.fullmatch(cell)]
        labels = [cell for cell in cells[: tuples[0]] if cell] if tuples else []
        if labels:
            values = [float(v) for v in TUPLE.fullmatch(cells[tuples[-1]]).group(1).split(",")]
            rows.setdefault(labels[-1], []).append(values)
    return rows


@pytest.mark.skipif(not PAPERS_DIR.is_dir(), reason=f"needs the papers' text at {PAPERS_DIR} (or $ZSAD_PAPERS_DIR)")
@pytest.mark.parametrize("method", sorted(PAPERS))
def test_published_numbers_equal_the_papers_tab_1(method):
    file_name, start, end, metric_order, labels = PAPERS[method]
    rows = table_rows((PAPERS_DIR / file_name).read_text(encoding="utf-8"), start, end)
    ours = paper_results(method)
    assert set(ours) == set(labels)  # every Tab. 1 row is in the json, and nothing else
    for kind, label in labels.items():
        published = [value for values in rows[label] for value in values]
        stored = [round(ours[kind][metric] * 100, 1) for metric in metric_order if metric in ours[kind]]
        assert stored == published, (method, kind, label)
