"""Find byte-identical files (BrainMRI, for one, ships duplicates; we keep them but can report them)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path


def find_duplicate_files(paths: Iterable[Path]) -> list[list[Path]]:
    """Groups (each of 2+ paths, in input order) of files with identical bytes.

    Files are first grouped by size, so only same-size files are hashed (SHA-256).
    """
    by_size: dict[int, list[Path]] = defaultdict(list)
    for path in dict.fromkeys(Path(p) for p in paths):
        by_size[path.stat().st_size].append(path)
    groups: list[list[Path]] = []
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        by_digest: dict[str, list[Path]] = defaultdict(list)
        for path in same_size:
            by_digest[hashlib.sha256(path.read_bytes()).hexdigest()].append(path)
        groups.extend(group for group in by_digest.values() if len(group) > 1)
    return groups
