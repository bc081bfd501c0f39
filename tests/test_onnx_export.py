"""ONNX export of every method (zsad-tiny): onnxruntime matches torch, any batch size,
metadata, and `zsad predict --onnx` writing the same outputs as the torch path."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("onnxruntime", reason="ONNX tests need onnx and onnxruntime (the 'onnx' extra)")
pytest.importorskip("onnx", reason="ONNX tests need onnx and onnxruntime (the 'onnx' extra)")

import toy_method  # noqa: F401,E402  (registers 'toy': a method written outside zsad gets these checks too)

from zsad.cli import app  # noqa: E402
from zsad.data.synth import generate_mvtec_like  # noqa: E402
from zsad.engine.onnx_export import OnnxExportError, OnnxPredictor, export_onnx, torchscript_exporter_options  # noqa: E402
from zsad.methods import available_methods, build_method, method_class  # noqa: E402
from zsad.text import build_learned_prompts, encode_learned_prompts  # noqa: E402

TINY = ["--backbone", "zsad-tiny", "--weights", "random", "--image-size", "64"]


def _detector(method, backbone):
    torch.manual_seed(0)
    model = build_method(method, backbone).eval()
    with torch.no_grad():  # make every trainable part matter (untrained adapters start near identity)
        for name, parameter in model.named_parameters():
            if not name.startswith("backbone.") and parameter.dim() > 1:
                parameter.normal_(0, 0.3, generator=torch.Generator().manual_seed(len(name)))
    return model


class _LearnedPromptFeature(torch.nn.Module):
    """learned tokens (1, n, d_text) -> (1, d_t) feature of a prompt with one learned side."""

    def __init__(self, backbone, class_name: str, side: str):
        super().__init__()
        self.backbone, self.class_name, self.side = backbone, class_name, side

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        prompts = build_learned_prompts(self.backbone, [self.class_name], **{self.side: tokens})
        return encode_learned_prompts(self.backbone, prompts)


@pytest.mark.parametrize("class_name, side", [("", "suffix"), ("bottle", "suffix"), ("bottle", "prefix")])
def test_learned_prompts_with_empty_parts_convert(class_name, side, tiny_backbone, tmp_path):
    # An empty prefix, suffix or class name once made torch's converter die with SIGFPE
    # (an assignment to an empty slice traced as a zero-element index_put): WMoE-CLIP's prompts.
    # Converted in-process: a regression ends the test run loudly (a forked child of this
    # multi-threaded process can deadlock instead).
    import onnxruntime

    module = _LearnedPromptFeature(tiny_backbone, class_name, side).eval()
    tokens = torch.randn(1, 2, tiny_backbone.text_width, generator=torch.Generator().manual_seed(3))
    path = tmp_path / "prompt.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (tokens,), str(path), **torchscript_exporter_options(), input_names=["tokens"])
    (onnx_feature,) = onnxruntime.InferenceSession(str(path)).run(None, {"tokens": tokens.numpy()})
    with torch.no_grad():
        assert (torch.from_numpy(onnx_feature) - module(tokens)).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "method", [name for name in available_methods() if not method_class(name).scores_sets]
)  # set methods refuse export
def test_onnxruntime_matches_torch_for_any_batch_size(method, tiny_backbone, tmp_path):
    model = _detector(method, tiny_backbone)
    path = tmp_path / f"{method}.onnx"
    check = export_onnx(model, "metal nut", path, meta={"method": method})
    assert check.batch_size == 2 and max(check.map_difference, check.score_difference) <= 1e-4
    assert check.dynamic_batch or method not in ("zeroshot", "moeclip")  # these two trace batch-free
    runtime = OnnxPredictor(path)
    assert runtime.meta["method"] == method and runtime.meta["class_words"] == "metal nut" and runtime.image_size == 64
    for batch in (1, 3):
        images = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(images, ["metal nut"] * batch)
        maps, scores = runtime.run(images)
        assert maps.shape == (batch, 64, 64) and scores.shape == (batch,)
        assert (maps - expected.anomaly_map).abs().max() <= 1e-4
        assert (scores - expected.pred_score).abs().max() <= 1e-4


def test_wmoeclip_without_ctds_exports_a_batch_free_graph(tiny_backbone, tmp_path):
    # CTDS conditions the prompts on each image (a one-image graph); without it the Haar
    # transform of WCMA must not tie the graph to the traced batch.
    torch.manual_seed(0)
    model = build_method("wmoeclip", tiny_backbone, {"ctds": False}).eval()
    check = export_onnx(model, "metal nut", tmp_path / "wm.onnx")
    assert check.dynamic_batch and max(check.map_difference, check.score_difference) <= 1e-4


def test_the_prompt_words_are_baked_in(tiny_backbone, tmp_path):
    model = _detector("zeroshot", tiny_backbone)
    export_onnx(model, "bottle", tmp_path / "bottle.onnx")
    runtime = OnnxPredictor(tmp_path / "bottle.onnx")
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        other_words = model(images, ["screw"] * 2).pred_score
    _, scores = runtime.run(images)
    assert (scores - other_words).abs().max() > 1e-6  # the file scores 'bottle', not another class
    with pytest.raises(ValueError, match="exported for 'bottle'"):
        runtime.predict(torch.zeros(1), class_name="screw")


def test_dispatch_is_restored_after_export(tiny_backbone, tmp_path):
    model = _detector("moeclip", tiny_backbone)
    for layer, dispatch in zip(model.moe_layers, ("sparse", "auto", "dense", "sparse")):
        layer.dispatch = dispatch
    before = [layer.dispatch for layer in model.moe_layers]
    export_onnx(model, "object", tmp_path / "m.onnx")
    assert [layer.dispatch for layer in model.moe_layers] == before


def test_a_forward_pass_built_image_by_image_is_exported_for_one_image_at_a_time(tiny_backbone, tmp_path):
    from zsad.methods.base import DetectorOutput
    from zsad.methods.zeroshot import ZeroShotDetector

    class RowByRow(ZeroShotDetector):
        def forward(self, images, class_names, masks=None, labels=None):
            rows = [super(RowByRow, self).forward(images[i : i + 1], class_names[:1]) for i in range(len(class_names))]
            return DetectorOutput(torch.cat([r.anomaly_map for r in rows]), torch.cat([r.pred_score for r in rows]))

    model = RowByRow(tiny_backbone, ZeroShotDetector.config_class())
    check = export_onnx(model, "object", tmp_path / "rows.onnx")
    assert not check.dynamic_batch and max(check.map_difference, check.score_difference) <= 1e-4
    runtime = OnnxPredictor(tmp_path / "rows.onnx")
    assert runtime.meta["batch_size"] == 1 and runtime.run(torch.zeros(3, 3, 64, 64))[0].shape == (3, 64, 64)


def test_a_forward_pass_that_depends_on_input_values_in_python_is_refused(tiny_backbone, tmp_path):
    from zsad.methods.base import DetectorOutput
    from zsad.methods.zeroshot import ZeroShotDetector

    class PythonScale(ZeroShotDetector):
        def forward(self, images, class_names, masks=None, labels=None):
            output = super().forward(images, class_names)
            scale = float(images.abs().amax())  # a Python number: traced as a constant
            return DetectorOutput(output.anomaly_map * scale / 10, output.pred_score)

    with pytest.raises(OnnxExportError, match="depends on the input in a way tracing cannot keep"):
        export_onnx(PythonScale(tiny_backbone, ZeroShotDetector.config_class()), "object", tmp_path / "scale.onnx")


def test_files_that_are_not_zsad_exports_are_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "other.onnx"))
    with pytest.raises(OnnxExportError, match="not written by `zsad export`"):
        OnnxPredictor(tmp_path / "other.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(OnnxExportError, match="not a usable ONNX model"):
        OnnxPredictor(tmp_path / "junk.onnx")


def test_cli_export_then_predict_onnx_writes_what_the_torch_path_writes(tmp_path):
    generate_mvtec_like(tmp_path / "data", categories=["tile"], size=64, n_train=1, n_good=2, n_defect_per_kind=1)
    images = tmp_path / "data" / "tile" / "test"
    runner = CliRunner()
    torch.manual_seed(0)
    exported = runner.invoke(app, ["export", "--out", str(tmp_path / "m.onnx"), "--class-name", "tile", *TINY])
    assert exported.exit_code == 0, exported.output
    assert "max |diff|" in exported.output
    torch.manual_seed(0)  # the same random backbone for the torch run
    plain = runner.invoke(
        app, ["predict", str(images), "--out", str(tmp_path / "torch"), "--class-name", "tile", *TINY, "--device", "cpu", "--quiet"]
    )
    onnx_run = runner.invoke(app, ["predict", str(images), "--out", str(tmp_path / "onnx"), "--onnx", str(tmp_path / "m.onnx"), "--quiet"])
    assert plain.exit_code == 0 and onnx_run.exit_code == 0, onnx_run.output
    listing = lambda root: sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())  # noqa: E731
    assert listing(tmp_path / "torch") == listing(tmp_path / "onnx")
    torch_rows = json.loads((tmp_path / "torch" / "scores.json").read_text())["images"]
    onnx_report = json.loads((tmp_path / "onnx" / "scores.json").read_text())
    assert onnx_report["meta"]["method"] == "zeroshot" and onnx_report["meta"]["class_words"] == "tile"
    for ours, theirs in zip(onnx_report["images"], torch_rows):
        assert ours["path"] == theirs["path"] and abs(ours["score"] - theirs["score"]) <= 1e-4
    refused = runner.invoke(
        app, ["predict", str(images), "--out", str(tmp_path / "x"), "--onnx", str(tmp_path / "m.onnx"), "--method", "moeclip"]
    )
    assert refused.exit_code == 1 and "--onnx runs the exported model as it is" in refused.output
    wrong_words = runner.invoke(
        app, ["predict", str(images), "--out", str(tmp_path / "y"), "--onnx", str(tmp_path / "m.onnx"), "--class-name", "screw"]
    )
    assert wrong_words.exit_code == 1 and "class_words: requested 'screw', the file has 'tile'" in wrong_words.output
    wrong_size = runner.invoke(
        app, ["predict", str(images), "--out", str(tmp_path / "z"), "--onnx", str(tmp_path / "m.onnx"), "--image-size", "96"]
    )
    assert wrong_size.exit_code == 1 and "image_size: requested 96, the file has 64" in wrong_size.output
    agreeing = runner.invoke(
        app, ["predict", str(images), "--out", str(tmp_path / "a"), "--onnx", str(tmp_path / "m.onnx"), *TINY, "--quiet"]
    )
    assert agreeing.exit_code == 0, agreeing.output


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter, on purpose
@pytest.mark.parametrize("value", [1.0, 0.5])
def test_addcdiv_gets_an_onnx_form(tmp_path, value):
    import onnxruntime

    from zsad.engine.onnx_export import _missing_symbolics

    class AddCDiv(torch.nn.Module):
        def forward(self, x):
            return torch.addcdiv(x, x * 3, x.abs() + 1, value=value)

    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    path = str(tmp_path / "addcdiv.onnx")
    with _missing_symbolics(17):
        torch.onnx.export(AddCDiv(), (x,), path, **torchscript_exporter_options(), opset_version=17, input_names=["x"])
    (result,) = onnxruntime.InferenceSession(path).run(None, {"x": x.numpy()})
    assert torch.allclose(torch.from_numpy(result), AddCDiv()(x), atol=1e-6)


def test_an_error_of_the_converter_becomes_an_onnx_export_error(tiny_backbone, tmp_path, monkeypatch):
    from zsad.engine import onnx_export

    model = _detector("zeroshot", tiny_backbone)

    def failing(*args, **kwargs):
        raise OnnxExportError("no ONNX form for aten::something")

    monkeypatch.setattr(onnx_export, "_convert", failing)
    with pytest.raises(OnnxExportError, match="no ONNX form for aten::something"):
        export_onnx(model, "object", tmp_path / "error.onnx")
