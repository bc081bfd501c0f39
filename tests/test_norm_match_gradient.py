"""Norm matching (Eq. 4): the "bounded" backward keeps LoRA B learning, "paper" stalls it;
the forward pass is the same in both."""
from __future__ import annotations

import warnings

import pytest
import torch

from zsad.backbone import create_backbone
from zsad.checkpoints import read_checkpoint
from zsad.data.synth import generate_mvtec_like
from zsad.engine.train_config import TrainingConfig
from zsad.engine.training import fit
from zsad.errors import RandomWeightsWarning
from zsad.methods import build_method
from zsad.methods.moeclip.moe import GAIN_FLOOR, MoeAdapter, match_norm
from zsad.text import ClassNames

IMAGE_SIZE = 32
LR = 1e-3


def exact_gradients(update, reference, grad, eps=1e-6):
    update = update.clone().requires_grad_(True)
    reference = reference.clone().requires_grad_(True)
    (match_norm(update, reference, eps, "paper") * grad).sum().backward()
    return update.grad, reference.grad


def bounded_gradients(update, reference, grad, eps=1e-6):
    update = update.clone().requires_grad_(True)
    reference = reference.clone().requires_grad_(True)
    (match_norm(update, reference, eps, "bounded") * grad).sum().backward()
    return update.grad, reference.grad


def test_bounded_forward_is_bitwise_the_paper_forward():
    reference = torch.randn(50, 16) * 10
    for update in (torch.zeros(50, 16), torch.randn(50, 16) * 1e-9, torch.randn(50, 16)):
        assert torch.equal(match_norm(update, reference, gradient="bounded"), match_norm(update, reference, gradient="paper"))


def test_bounded_backward_is_exact_where_the_update_is_not_tiny():
    torch.manual_seed(0)
    reference, grad = torch.randn(20, 16) * 5, torch.randn(20, 16)
    update = torch.randn(20, 16) * 5 * GAIN_FLOOR * 3  # ||x'|| ~ 3 GAIN_FLOOR ||x||
    for bounded, exact in zip(bounded_gradients(update, reference, grad), exact_gradients(update, reference, grad)):
        assert torch.allclose(bounded, exact, rtol=1e-5, atol=1e-6)
    # Against finite differences too (float64 through the custom backward).
    update64 = update.double().requires_grad_(True)
    reference64 = reference.double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda u, r: match_norm(u, r, 1e-6, "bounded"), (update64, reference64))


def test_bounded_backward_caps_the_gain_at_zero_and_keeps_directions():
    torch.manual_seed(0)
    reference, grad = torch.randn(8, 16) * 5, torch.randn(8, 16)
    zero = torch.zeros(8, 16)
    exact_update, _ = exact_gradients(zero, reference, grad)
    bounded_update, bounded_reference = bounded_gradients(zero, reference, grad)
    assert exact_update.abs().max() > 1e5 * grad.abs().max()  # the singular gradient (gain ||x|| / eps)
    assert torch.isfinite(bounded_update).all() and torch.isfinite(bounded_reference).all()
    assert torch.allclose(bounded_update, grad / GAIN_FLOOR)  # gain exactly 1 / GAIN_FLOOR at x' = 0
    assert torch.equal(bounded_reference, torch.zeros_like(reference))
    tiny = torch.randn(8, 16) * 1e-4  # ||x'|| << GAIN_FLOOR ||x||: same direction, smaller length
    bounded_tiny, _ = bounded_gradients(tiny, reference, grad)
    exact_tiny, _ = exact_gradients(tiny, reference, grad)
    cosine = torch.nn.functional.cosine_similarity(bounded_tiny, exact_tiny, dim=-1)
    assert torch.allclose(cosine, torch.ones(8), atol=1e-5)
    assert (bounded_tiny.norm(dim=-1) <= exact_tiny.norm(dim=-1) * GAIN_FLOOR).all()
    # A zero reference token (and a zero update) still gives finite gradients.
    assert all(torch.isfinite(g).all() for g in bounded_gradients(torch.zeros(1, 4), torch.zeros(1, 4), torch.ones(1, 4)))


def test_adapter_output_at_init_is_exactly_0_9_x_in_both_modes():
    hidden = torch.randn(2, 5, 32)
    for mode in ("bounded", "paper"):
        torch.manual_seed(0)
        adapter = MoeAdapter(32, num_experts=4, rank=4, norm_match_gradient=mode).train()
        assert torch.equal(adapter(hidden).hidden, 0.9 * hidden)
    with pytest.raises(ValueError, match="norm_match_gradient"):
        MoeAdapter(32, num_experts=4, rank=4, norm_match_gradient="exact")


# ---------------------------------------------------------------- real training steps


@pytest.fixture(scope="module")
def backbone():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        torch.manual_seed(1234)
        return create_backbone(model_name="zsad-tiny", weights="random", image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def data_spec(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("mvtec")
    generate_mvtec_like(root, categories=["stripes", "disc"], n_good=4, n_defect_per_kind=1, size=IMAGE_SIZE, seed=0)
    return f"mvtec:{root}"  # 16 images: 4 steps of 4 per epoch


def train_and_track_b(backbone, data_spec, out, mode: str, monkeypatch, steps: int = 40) -> list[float]:
    """Mean per-step |dB| / lr (all layers) for each of ``steps`` Adam (0.5, 0.999) steps of `fit`.

    The movement is recorded by wrapping ``Adam.step`` itself, not with optimiser step
    hooks: on torch 2.1 those stop firing in a process once anything has been compiled
    (dynamo rewraps the optimisers' ``step``), as the compile tests do before this one."""
    torch.manual_seed(0)
    detector = build_method("moeclip", backbone, {"norm_match_gradient": mode})
    lora_b = [p for name, p in detector.named_parameters() if name.endswith("lora_b")]
    previous = [p.detach().clone() for p in lora_b]
    movement: list[float] = []
    adam_step = torch.optim.Adam.step

    def step_and_record(optimiser, *args, **kwargs):
        result = adam_step(optimiser, *args, **kwargs)
        moved = [float((p.detach() - before).abs().mean()) for p, before in zip(lora_b, previous)]
        movement.append(sum(moved) / len(moved) / LR)
        previous[:] = [p.detach().clone() for p in lora_b]
        return result

    config = TrainingConfig(epochs=steps // 4, batch_size=4, lr=LR, betas=(0.5, 0.999), seed=0)
    with monkeypatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", step_and_record)
        fit(detector, [data_spec], out, config, ClassNames.load(), torch.device("cpu"), show_progress=False)
    assert len(movement) == steps
    return movement


def test_b_keeps_learning_with_the_bounded_gradient_and_stalls_with_the_paper_one(backbone, data_spec, tmp_path, monkeypatch):
    bounded = train_and_track_b(backbone, data_spec, tmp_path / "bounded", "bounded", monkeypatch)
    paper = train_and_track_b(backbone, data_spec, tmp_path / "paper", "paper", monkeypatch)
    # Adam's first step is lr either way (up to its eps: |g| / (|g| + eps) is 1 - 1.5e-6 on torch 2.1)
    assert bounded[0] == pytest.approx(1.0, rel=1e-5) and paper[0] == pytest.approx(1.0, rel=1e-5)
    bounded_mean = sum(bounded[10:40]) / 30
    paper_mean = sum(paper[10:40]) / 30
    assert bounded_mean >= 0.1
    assert paper_mean < 0.01 * bounded_mean  # the stall


def test_resume_with_the_bounded_gradient_repeats_the_straight_run(backbone, data_spec, tmp_path):
    def run(out, epochs, resume=False, detector=None):
        torch.manual_seed(0)
        detector = detector or build_method("moeclip", backbone, {})
        config = TrainingConfig(epochs=epochs, batch_size=4, lr=LR, seed=0, max_steps_per_epoch=2)
        fit(detector, [data_spec], out, config, ClassNames.load(), torch.device("cpu"), show_progress=False, resume=resume)
        return detector

    straight = run(tmp_path / "straight", 2).trainable_state_dict()
    run(tmp_path / "resumed", 1)
    resumed = run(tmp_path / "resumed", 2, resume=True).trainable_state_dict()
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)
    tensors, _ = read_checkpoint(tmp_path / "resumed" / "model.safetensors")
    assert any(not torch.equal(value, torch.zeros_like(value)) for key, value in tensors.items() if key.endswith("lora_b"))
