"""Layout readers: one function per data-set family, a table from kind name to reader."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...settings import INDUSTRIAL, MEDICAL
from . import (
    bmad,
    folder,
    lesions,
    lineage,
    manifest,
    medical,
    mvtec,
    mvtec_ad2,
    mvtec_loco,
    realiad,
    surface,
    visa,
)
from .common import DataLayoutError, LayoutSamples


def _the_path(path: Path) -> tuple[Path, ...]:
    return (path,)


@dataclass(frozen=True)
class Layout:
    """How to read one kind of data set: the reader, a one-line layout description, the
    domain of its images (``settings.DOMAINS``; None = not known from the kind: the user's
    folders, whose domain the user names), and the paths a spec's PATH names (all must
    exist; checked before anything heavy is imported)."""

    read: Callable[[Path], LayoutSamples]
    description: str
    predict_only_splits: tuple[str, ...] = ()
    domain: str | None = INDUSTRIAL
    named_paths: Callable[[Path], tuple[Path, ...]] = _the_path


LAYOUTS: dict[str, Layout] = {
    "mvtec": Layout(mvtec.read_mvtec_like, mvtec.EXPECTED_LAYOUT),
    "visa": Layout(visa.read_visa, visa.EXPECTED_LAYOUT),
    "btad": Layout(mvtec.read_mvtec_like, mvtec.EXPECTED_LAYOUT),
    "mpdd": Layout(mvtec.read_mvtec_like, mvtec.EXPECTED_LAYOUT),
    "dtd": Layout(mvtec.read_mvtec_like, mvtec.EXPECTED_LAYOUT),
    "rsdd": Layout(mvtec.read_mvtec_like, mvtec.EXPECTED_LAYOUT),
    "ksdd2": Layout(mvtec.read_mvtec_like, mvtec.EXPECTED_LAYOUT),
    "kvasir": Layout(medical.read_kvasir, medical.KVASIR_LAYOUT, domain=MEDICAL),
    "clinicdb": Layout(medical.read_clinicdb, medical.CLINICDB_LAYOUT, domain=MEDICAL),
    "headct": Layout(medical.read_headct, medical.HEADCT_LAYOUT, domain=MEDICAL),
    "brainmri": Layout(medical.read_brainmri, medical.YES_NO_LAYOUT, domain=MEDICAL),
    "br35h": Layout(medical.read_br35h, medical.YES_NO_LAYOUT, domain=MEDICAL),
    "ksdd": Layout(surface.read_ksdd, surface.KSDD_LAYOUT),
    "dagm": Layout(surface.read_dagm, surface.DAGM_LAYOUT),
    "bmad-brainmri": Layout(bmad.read_bmad_brainmri, bmad.EXPECTED_LAYOUT, domain=MEDICAL),
    "bmad-liverct": Layout(bmad.read_bmad_liverct, bmad.EXPECTED_LAYOUT, domain=MEDICAL),
    "bmad-retinaoct": Layout(bmad.read_bmad_retinaoct, bmad.EXPECTED_LAYOUT, domain=MEDICAL),
    "colondb": Layout(lesions.read_colondb, lesions.POLYP_LAYOUT, domain=MEDICAL),
    "cvc300": Layout(lesions.read_cvc300, lesions.POLYP_LAYOUT, domain=MEDICAL),
    "endo": Layout(lesions.read_endo, lesions.POLYP_LAYOUT, domain=MEDICAL),
    "isic": Layout(lesions.read_isic, lesions.ISIC_LAYOUT, domain=MEDICAL),
    "folder": Layout(folder.read_folder, folder.EXPECTED_LAYOUT, domain=None),
    "manifest": Layout(manifest.read_manifest, manifest.EXPECTED_LAYOUT, domain=None),
    "mvtec-ad2": Layout(mvtec_ad2.read_mvtec_ad2, mvtec_ad2.EXPECTED_LAYOUT, predict_only_splits=mvtec_ad2.PREDICT_ONLY_SPLITS),
    "mvtec-loco": Layout(mvtec_loco.read_mvtec_loco, mvtec_loco.EXPECTED_LAYOUT),
    "realiad": Layout(realiad.read_realiad, realiad.EXPECTED_LAYOUT),
    "anomalyclip-meta": Layout(lineage.read_anomalyclip_meta, lineage.META_LAYOUT, domain=None),
    "aaclip-jsonl": Layout(lineage.read_aaclip_jsonl, lineage.JSONL_LAYOUT, domain=None, named_paths=lineage.jsonl_named_paths),
}

__all__ = ["LAYOUTS", "Layout", "LayoutSamples", "DataLayoutError"]
