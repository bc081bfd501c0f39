"""Layout readers: one function per data-set family, a table from kind name to reader."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zsad.data.layouts import (
    bmad,
    folder,
    lesions,
    manifest,
    medical,
    mvtec,
    surface,
    visa,
)
from zsad.data.layouts.common import DataLayoutError, LayoutSamples


@dataclass(frozen=True)
class Layout:
    """How to read one kind of data set: the reader and a one-line layout description."""

    read: Callable[[Path], LayoutSamples]
    description: str


LAYOUTS: dict[str, Layout] = {
    "mvtec": Layout(mvtec.read_mvtec_like, mvtec.EXPECTED_LAYOUT),
    "visa": Layout(visa.read_visa, visa.EXPECTED_LAYOUT),
    "btad": Layout(mvtec.read_mvtec_like, mvtec.EXPECTED_LAYOUT),
    "mpdd": Layout(mvtec.read_mvtec_like, mvtec.EXPECTED_LAYOUT),
    "dtd": Layout(mvtec.read_mvtec_like, mvtec.EXPECTED_LAYOUT),
    "rsdd": Layout(mvtec.read_mvtec_like, mvtec.EXPECTED_LAYOUT),
    "ksdd2": Layout(mvtec.read_mvtec_like, mvtec.EXPECTED_LAYOUT),
    "kvasir": Layout(medical.read_kvasir, medical.KVASIR_LAYOUT),
    "clinicdb": Layout(medical.read_clinicdb, medical.CLINICDB_LAYOUT),
    "headct": Layout(medical.read_headct, medical.HEADCT_LAYOUT),
    "brainmri": Layout(medical.read_brainmri, medical.YES_NO_LAYOUT),
    "br35h": Layout(medical.read_br35h, medical.YES_NO_LAYOUT),
    "ksdd": Layout(surface.read_ksdd, surface.KSDD_LAYOUT),
    "dagm": Layout(surface.read_dagm, surface.DAGM_LAYOUT),
    "bmad-brainmri": Layout(bmad.read_bmad_brainmri, bmad.EXPECTED_LAYOUT),
    "bmad-liverct": Layout(bmad.read_bmad_liverct, bmad.EXPECTED_LAYOUT),
    "bmad-retinaoct": Layout(bmad.read_bmad_retinaoct, bmad.EXPECTED_LAYOUT),
    "colondb": Layout(lesions.read_colondb, lesions.POLYP_LAYOUT),
    "cvc300": Layout(lesions.read_cvc300, lesions.POLYP_LAYOUT),
    "endo": Layout(lesions.read_endo, lesions.POLYP_LAYOUT),
    "isic": Layout(lesions.read_isic, lesions.ISIC_LAYOUT),
    "folder": Layout(folder.read_folder, folder.EXPECTED_LAYOUT),
    "manifest": Layout(manifest.read_manifest, manifest.EXPECTED_LAYOUT),
}

__all__ = ["LAYOUTS", "Layout", "LayoutSamples", "DataLayoutError"]
