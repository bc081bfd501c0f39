"""`zsad predict-many` on Ray Data: manifest chunks, shards, equality with `zsad predict`,
bounded driver memory, and kill + resume."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zsad
from zsad.data.layouts.common import IMAGE_SUFFIXES
from zsad.errors import InvalidInputError, MissingInputError

pa = pytest.importorskip("pyarrow", reason="the scale extra (pyarrow) is not installed")
pq = pytest.importorskip("pyarrow.parquet")

from zsad.engine.path_manifest import PathList, build_manifest, iter_path_list, read_manifest  # noqa: E402
from zsad.engine.score_shards import ShardAssembler, count_errors, done_chunks, drop_parts, shard_path, write_part  # noqa: E402

TESTS = Path(__file__).resolve().parent
TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "32"]


def _images(folder: Path, n: int, side: int = 40, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"img{i:05d}.png"
        Image.fromarray(rng.integers(0, 255, (side, side + 8, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


# --- manifest -------------------------------------------------------------------------

def test_manifest_chunks_every_image_once_and_logs_what_it_left_out(tmp_path):
    _images(tmp_path / "in" / "a", 7)
    _images(tmp_path / "in" / "b", 5, seed=1)
    (tmp_path / "in" / ".hidden.png").write_bytes(b"x")
    (tmp_path / "in" / "notes.txt").write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    manifest = build_manifest(out, [tmp_path / "in"], [], IMAGE_SUFFIXES, chunk_size=5)
    assert [count for _, count in manifest.chunks] == [5, 5, 2]
    rows = pa.concat_tables([pq.read_table(file) for file, _ in manifest.chunks]).to_pylist()
    assert len({row["path"] for row in rows}) == 12
    assert [(row["chunk"], row["index"]) for row in rows[:6]] == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0)]
    with open(out / "skipped.csv", newline="") as handle:
        skipped = list(csv.DictReader(handle))
    assert [Path(row["path"]).name for row in skipped] == [".hidden.png"]
    assert manifest.n_not_images == 1
    assert read_manifest(out) == manifest


def test_manifest_of_an_empty_folder_is_refused_and_left_incomplete(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no image files"):
        build_manifest(tmp_path, [tmp_path / "empty"], [], IMAGE_SUFFIXES, chunk_size=4)
    assert read_manifest(tmp_path) is None


@pytest.mark.parametrize("kind", ["txt", "csv", "parquet"])
def test_path_lists_of_every_kind_resolve_relative_paths_from_their_folder(tmp_path, kind):
    names = ["x/a.png", "b.png", str(tmp_path / "abs.png")]
    file = tmp_path / f"list.{kind}"
    if kind == "txt":
        file.write_text("\n".join(names) + "\n\n")
    elif kind == "csv":
        file.write_text("id,image\n" + "".join(f"{i},{name}\n" for i, name in enumerate(names)))
    else:
        pq.write_table(pa.table({"image": names}), file)
    column = "path" if kind == "txt" else "image"
    assert list(iter_path_list(PathList(file, column))) == [tmp_path / "x/a.png", tmp_path / "b.png", tmp_path / "abs.png"]


def test_path_list_errors_name_the_problem(tmp_path):
    with pytest.raises(MissingInputError):
        list(iter_path_list(PathList(tmp_path / "none.csv")))
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InvalidInputError, match=".txt"):
        list(iter_path_list(PathList(tmp_path / "list.json")))
    (tmp_path / "list.csv").write_text("file\na.png\n")
    with pytest.raises(InvalidInputError, match="no column 'path'.*--path-column"):
        list(iter_path_list(PathList(tmp_path / "list.csv")))


# --- shards ---------------------------------------------------------------------------

def _rows(paths: list[str], error: str = "") -> pa.Table:
    n = len(paths)
    return pa.table({
        "path": paths, "score": [None if error else 0.5] * n, "label": pa.array([None if error else 1] * n, pa.int8()),
        "p_value": pa.array([None] * n, pa.float64()), "error": [error] * n, "map": [""] * n, "overlay": [""] * n,
    })


def test_a_shard_is_made_once_its_chunk_is_complete_in_any_arrival_order(tmp_path):
    assembler = ShardAssembler(tmp_path, {0: 3, 1: 2})
    write_part(tmp_path, 1, _rows(["d"]))
    write_part(tmp_path, 0, _rows(["b"]))
    assert not assembler.add(1, 1) and not assembler.add(0, 1)
    assert done_chunks(tmp_path) == set() and assembler.unfinished() == [0, 1]
    write_part(tmp_path, 0, _rows(["c", "a"], error="unreadable"))
    assert assembler.add(0, 2)
    assert done_chunks(tmp_path) == {0}
    assert pq.read_table(shard_path(tmp_path, 0)).column("path").to_pylist() == ["a", "b", "c"]
    write_part(tmp_path, 1, _rows(["e"]))
    assert assembler.add(1, 1)
    assert assembler.unfinished() == [] and assembler.n_rows == 5
    assert count_errors(tmp_path, [0, 1]) == 2
    assert [p.name for p in (tmp_path / "scores").iterdir()] and not list((tmp_path / "scores").glob("*.tmp"))
    assert not any((tmp_path / "scores" / ".parts").iterdir())  # parts removed once joined


def test_parts_of_an_unfinished_chunk_are_dropped_on_resume(tmp_path):
    write_part(tmp_path, 4, _rows(["x"]))
    drop_parts(tmp_path)
    assert done_chunks(tmp_path) == set() and not (tmp_path / "scores" / ".parts").exists()


def test_more_rows_than_a_chunk_has_is_a_bug_not_a_silent_shard(tmp_path):
    assembler = ShardAssembler(tmp_path, {0: 1})
    with pytest.raises(RuntimeError, match="got 2 rows"):
        assembler.add(0, 2)


# --- with Ray -------------------------------------------------------------------------

def _zsad(*args: str, **kwargs) -> subprocess.Popen:
    source_root = str(Path(zsad.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source_root, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "zsad", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kwargs,
    )


def _shard_rows(out: Path) -> list[dict]:
    return pq.read_table(out / "scores").to_pylist()


@pytest.mark.slow
def test_killed_run_resumes_with_nothing_lost_or_scored_twice_and_equals_zsad_predict(tmp_path):
    _images(tmp_path / "in", 200)
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    plain = _zsad("predict", str(tmp_path / "in"), "--out", str(tmp_path / "plain"), *TINY, "-q")
    assert plain.wait(timeout=600) == 2, plain.stdout.read()  # the broken file

    out = tmp_path / "many"
    many = [str(tmp_path / "in"), "--out", str(out), *TINY, "--actors", "2", "--chunk-size", "5", "--batch-size", "5", "-q"]
    first = _zsad("predict-many", *many)
    deadline = time.monotonic() + 600
    while len(done_chunks(out)) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    first.wait()
    kept = {chunk: shard_path(out, chunk).stat().st_mtime_ns for chunk in done_chunks(out)}
    assert 2 <= len(kept) < 41, "the kill came too late to test a resume"

    second = _zsad("predict-many", *many, "--resume")
    output = second.communicate(timeout=600)[0]
    assert second.returncode == 2, output  # the broken file is reported
    assert "kept from the earlier run" in output
    assert {chunk: shard_path(out, chunk).stat().st_mtime_ns for chunk in kept} == kept  # not redone
    rows = _shard_rows(out)
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)) == 201
    with open(tmp_path / "plain" / "scores.csv", newline="") as handle:
        expected = {row["path"]: row for row in csv.DictReader(handle)}
    assert set(paths) == set(expected)
    for row in rows:
        if row["error"]:
            assert row["score"] is None and expected[row["path"]]["error"]
        else:
            assert row["score"] == pytest.approx(float(expected[row["path"]]["score"]), abs=2e-6)  # scores.csv has 6 decimals
            assert row["label"] == int(expected[row["path"]]["label"])


@pytest.mark.slow
def test_resume_with_another_threshold_is_refused_naming_it(tmp_path):
    _images(tmp_path / "in", 4)
    out = tmp_path / "out"
    args = [str(tmp_path / "in"), "--out", str(out), *TINY, "-q"]
    assert _zsad("predict-many", *args).wait(timeout=600) == 0
    refused = _zsad("predict-many", *args, "--threshold", "0.7", "--resume")
    output = refused.communicate(timeout=600)[0]
    assert refused.returncode == 1
    assert "threshold: requested 0.7" in output and "Traceback" not in output


class _ConstantScorer:
    """Scores without a model, so that a test measures the pipeline and the driver."""

    image_size = 16

    def score_and_map(self, images, class_name=None):
        return [0.25] * len(images), np.zeros((len(images), 4, 4), np.float32)


def _constant_scorer() -> _ConstantScorer:
    return _ConstantScorer()


def _driver_peak(tmp_path: Path, n: int) -> tuple[int, int]:
    """Python memory peak of the driver over a run of n tiny images, and the rows written."""
    from zsad.engine.predict_many import predict_many
    from zsad.engine.ray_scoring import ScaleSettings

    folder = tmp_path / f"in{n}"
    _images(folder, n, side=8)
    tracemalloc.start()
    try:
        summary = predict_many(
            [folder],
            [],
            tmp_path / f"out{n}",
            _constant_scorer,
            {"test": n},
            16,
            IMAGE_SUFFIXES,
            settings=ScaleSettings(actors=2, cpus_per_actor=0.5, decode_cpus=0.5, batch_size=64),
            chunk_size=250,
            show_progress=False,
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, summary.n_images


@pytest.mark.slow
def test_driver_memory_does_not_grow_with_the_number_of_images(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    # The Ray workers import this module to unpickle the constant scorer.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(TESTS), str(Path(zsad.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        _driver_peak(tmp_path, 100)  # Ray Data's first use imports and caches; measured apart from the runs
        small, n_small = _driver_peak(tmp_path, 1_000)
        large, n_large = _driver_peak(tmp_path, 10_000)
    finally:
        ray.shutdown()
    assert (n_small, n_large) == (1_000, 10_000)
    print(f"driver Python peak: {small / 2**20:.1f} MiB at 1,000 images, {large / 2**20:.1f} MiB at 10,000")
    # Ten times the images: the paths alone would add ~1 MiB per 10,000 if they were held.
    assert large < 1.3 * small + 512 * 1024
