"""Issue 18 §2: one scorer interface. Predictor and OnnxPredictor implement Scorer;
predict(), predict_files, the reference folder and the service are written once on top
of it; a ScorerSpec builds the same scorer in another process."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zsad.api import Predictor, Scorer, ScorerSpec, load
from zsad.engine.fewshot import with_reference_folder
from zsad.engine.onnx_export import OnnxPredictor
from zsad.engine.prediction import predict_files
from zsad.errors import InvalidInputError

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = {"backbone": "zsad-tiny", "weights": "random", "image_size": 64, "device": "cpu"}


class Ramp(Scorer):
    """The smallest scorer: a horizontal ramp map; the score is the image's mean red."""

    image_size = 16

    def score_and_map(self, images, class_name=None):
        ramp = np.tile(np.linspace(0, 1, self.image_size, dtype=np.float32), (self.image_size, 1))
        scores = [float(np.asarray(image)[..., 0].mean() / 255) for image in images]
        return scores, np.stack([ramp] * len(images))

    def prompt_words(self, class_name=None):
        return class_name or "object"

    def provenance(self):
        return {"method": "ramp", "backbone": "none", "weights": "none", "image_size": self.image_size, "pipeline_check": True}

    def identity(self, class_name=None):
        return {**self.provenance(), "class_words": self.prompt_words(class_name), "references": None, "calibration": None}


def _image(path: Path, red: int, size=(30, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (red, 10, 10)).save(path)
    return path


def test_predict_is_written_once_for_every_scorer():
    assert Predictor.predict is Scorer.predict and OnnxPredictor.predict is Scorer.predict
    assert issubclass(Predictor, Scorer) and issubclass(OnnxPredictor, Scorer)


def test_the_protocol_alone_is_enough_for_predict_and_predict_files(tmp_path):
    path = _image(tmp_path / "in" / "a.png", 204)
    [prediction] = Ramp().predict(path)
    assert prediction.score == pytest.approx(0.8) and prediction.anomaly_map.shape == (20, 30)
    assert prediction.anomaly_map[:, 0].max() < 0.05 and prediction.anomaly_map[:, -1].min() > 0.95  # upsampled ramp
    summary = predict_files(Ramp(), [path], tmp_path / "out", threshold=0.5, show_progress=False, meta=Ramp().provenance())
    assert [row["score"] for row in summary.rows] == [pytest.approx(0.8)]
    recorded = json.loads((tmp_path / "out" / "scores.json").read_text())["meta"]
    assert recorded["identity"] == Ramp().identity()


def test_a_scorer_without_a_memory_bank_refuses_a_reference_folder_clearly(tmp_path):
    _image(tmp_path / "refs" / "r.png", 10)
    with pytest.raises(InvalidInputError, match="cannot use reference images"):
        with_reference_folder(Ramp(), tmp_path / "refs", 0.5)


def test_the_service_takes_any_scorer(tmp_path):
    from fastapi.testclient import TestClient

    from zsad.serve import ServeSettings, create_app

    with TestClient(create_app(Ramp(), ServeSettings())) as client:
        assert client.get("/info").json()["method"] == "ramp"
        buffer = _image(tmp_path / "u.png", 51).read_bytes()
        reply = client.post("/predict", files=[("file", ("u.png", buffer, "image/png"))])
        assert reply.status_code == 200 and reply.json()["results"][0]["score"] == pytest.approx(0.2)


def test_a_reference_folder_makes_a_few_shot_scorer_whose_identity_names_it(tmp_path):
    for index in range(2):
        _image(tmp_path / "refs" / f"{index}.png", 40 * index + 20)
    plain = load("zeroshot", **TINY)
    few = with_reference_folder(plain, tmp_path / "refs", 0.25)
    assert isinstance(few, Predictor) and plain.identity()["references"] is None
    described = few.identity()["references"]
    assert described["count"] == 2 and described["fusion_weight"] == 0.25 and len(described["sha256"]) == 64
    (tmp_path / "refs" / "1.png").unlink()
    _image(tmp_path / "refs" / "1.png", 250)  # same names, other content
    assert with_reference_folder(plain, tmp_path / "refs", 0.25).identity()["references"]["sha256"] != described["sha256"]


def test_a_scorer_spec_pickles_and_builds_the_same_scorer_in_another_process(tmp_path):
    path = _image(tmp_path / "a.png", 180)
    spec = ScorerSpec(method="zeroshot", class_name="screw", **TINY)
    assert pickle.loads(pickle.dumps(spec)) == spec and len(pickle.dumps(spec)) < 2000
    here = spec.build().predict(path)[0].score
    child = (
        "import pickle, sys\n"
        "spec = pickle.loads(sys.stdin.buffer.read())\n"
        f"print(spec.build().predict({str(path)!r})[0].score)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", child], input=pickle.dumps(spec), capture_output=True, env=env, check=True)
    assert float(done.stdout.decode().split()[-1]) == pytest.approx(here, abs=1e-6)


def test_a_spec_for_an_onnx_file_refuses_torch_only_options(tmp_path):
    with pytest.raises(InvalidInputError, match="drop --method/--reference"):
        ScorerSpec(method="moeclip", reference="refs", onnx=str(tmp_path / "m.onnx")).build()


def test_identity_tells_models_and_words_apart():
    first = load("zeroshot", **TINY)
    assert first.identity() == load("zeroshot", **TINY).identity()
    assert first.identity("screw")["class_words"] == "screw" and first.identity()["class_words"] != "screw"
    other_seed = load("zeroshot", **{**TINY, "weights": "random:1"}).identity()
    assert other_seed["weights"] != first.identity()["weights"]
    with pytest.warns(UserWarning, match="untrained"):
        moe = load("moeclip", **TINY)
    before = moe.identity()["own_state_sha256"]
    with torch.no_grad():
        next(iter(moe.detector.trainable_state_dict().values())).add_(1.0)
    changed = Predictor(moe.detector, moe.device, moe.class_names)  # one predictor hashes its frozen weights once
    assert changed.identity()["own_state_sha256"] != before
