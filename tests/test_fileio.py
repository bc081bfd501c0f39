"""Atomic writing and overwrite protection (zsad.fileio)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from zsad.fileio import (
    OutputExistsError,
    atomic_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_can_write,
    to_json_compatible,
)


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_atomic_save_failure_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old content")
    seen_tmp: list[Path] = []

    def failing_writer(tmp: Path) -> None:
        seen_tmp.append(tmp)
        with open(tmp, "w") as handle:
            handle.write("half of the new")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_save(target, failing_writer)
    assert target.read_text() == "old content"
    assert _listing(tmp_path) == ["report.json"]
    # the writer really wrote into a temporary sibling, not into the target
    assert seen_tmp[0].parent == tmp_path and seen_tmp[0] != target


def test_atomic_save_failure_without_old_file_leaves_nothing(tmp_path: Path) -> None:
    def failing_writer(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_save(tmp_path / "scores.csv", failing_writer)
    assert _listing(tmp_path) == []


def test_atomic_save_replaces_and_keeps_suffix_for_format_detection(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "map.png"
    suffixes: list[str] = []

    def writer(tmp: Path) -> None:
        suffixes.append(tmp.suffix)
        tmp.write_bytes(b"new")

    assert atomic_save(target, writer) == target
    assert target.read_bytes() == b"new"
    assert suffixes == [".png"]
    assert _listing(target.parent) == ["map.png"]


def test_atomic_save_keeps_permissions_of_replaced_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("x")
    os.chmod(target, 0o640)
    atomic_write_text(target, "y")
    assert target.stat().st_mode & 0o777 == 0o640


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="umask is read from /proc")
@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o002, 0o664)])
def test_new_file_follows_umask_not_mkstemp_private_mode(tmp_path: Path, umask: int, expected: int) -> None:
    previous = os.umask(umask)
    try:
        target = atomic_write_text(tmp_path / "b.txt", "y")
    finally:
        os.umask(previous)
    assert target.stat().st_mode & 0o777 == expected


def test_write_bytes_and_text_round_trip(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01\xff"
    atomic_write_text(tmp_path / "t.md", "zeile 1\nÄ\n")
    assert (tmp_path / "t.md").read_bytes() == "zeile 1\nÄ\n".encode("utf-8")


def test_json_has_no_nan_and_converts_numpy(tmp_path: Path) -> None:
    payload = {
        "a": float("nan"),
        "b": [1.5, float("inf"), -float("inf")],
        "c": np.float32(0.25),
        "d": np.int64(3),
        "e": np.array([[1.0, np.nan]]),
        "f": (1, 2),
        "g": tmp_path / "x.png",
        "h": None,
    }
    path = atomic_write_json(tmp_path / "m.json", payload)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert text.startswith('{\n  "a": null')  # indent 2
    loaded = json.loads(text)
    assert loaded == {
        "a": None,
        "b": [1.5, None, None],
        "c": 0.25,
        "d": 3,
        "e": [[1.0, None]],
        "f": [1, 2],
        "g": str(tmp_path / "x.png"),
        "h": None,
    }


def test_json_nonfinite_error_mode_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        atomic_write_json(tmp_path / "m.json", {"x": [math.nan]}, nonfinite="error")
    assert _listing(tmp_path) == []
    with pytest.raises(ValueError):
        to_json_compatible({}, nonfinite="zero")


def test_json_still_rejects_unknown_types(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "m.json", {"x": object()})
    assert _listing(tmp_path) == []


def test_check_can_write(tmp_path: Path) -> None:
    free = tmp_path / "new.json"
    taken = tmp_path / "metrics.md"
    taken.write_text("x")
    check_can_write([free], overwrite=False)
    check_can_write([free, taken], overwrite=True)
    with pytest.raises(OutputExistsError) as caught:
        check_can_write([free, taken, tmp_path / "other"], overwrite=False)
    message = str(caught.value)
    assert str(taken) in message and "--overwrite" in message and "--out" in message
    assert caught.value.path == taken
    assert isinstance(caught.value, FileExistsError)


def test_csv_text_reads_back_with_the_csv_module_from_mappings_and_sequences():
    import csv
    import io

    from zsad.fileio import csv_text

    columns = ["name", "value", "note"]
    by_name = csv_text(columns, [{"name": "a,b", "value": 1.5}, {"note": 'say "hi"', "name": "c", "value": 2}])
    by_order = csv_text(columns, [["a,b", 1.5, ""], ["c", 2, 'say "hi"']])
    assert by_name == by_order and "\r" not in by_name and by_name.endswith("\n")
    rows = list(csv.DictReader(io.StringIO(by_name)))
    assert rows == [{"name": "a,b", "value": "1.5", "note": ""}, {"name": "c", "value": "2", "note": 'say "hi"'}]
    assert csv_text(columns, []) == "name,value,note\n"
