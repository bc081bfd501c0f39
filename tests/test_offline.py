"""Issue 11, item 9: without network the first run says so at once, naming --weights PATH
and the dry run; weights already in the cache need no network."""
from __future__ import annotations

import socket

from PIL import Image
from typer.testing import CliRunner

from zsad.cli import app
from zsad.weights_cache import cached_weight_file, offline_reason

runner = CliRunner()


def _one_image(tmp_path):
    Image.new("RGB", (32, 32), (120, 60, 30)).save(tmp_path / "a.png")
    return str(tmp_path / "a.png")


def _said(result) -> str:
    return " ".join(result.output.split())


def test_hf_hub_offline_gives_one_clear_message_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["predict", _one_image(tmp_path), "--out", str(tmp_path / "out"), "--backbone", "ViT-B-16",
                                 "--cache-dir", str(tmp_path / "empty-cache"), "--device", "cpu", "--quiet"])
    assert result.exit_code == 1
    said = _said(result)
    assert "HF_HUB_OFFLINE is set" in said and "--weights PATH" in said
    assert "--backbone zsad-tiny --weights random" in said
    assert "Traceback" not in said and said.count("error:") == 1


def test_an_unreachable_hub_is_detected_without_retrying(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    attempts = []

    def no_network(address, timeout=None):
        attempts.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    assert offline_reason() == "huggingface.co cannot be reached (Network is unreachable)"
    assert attempts == [("huggingface.co", 443)]
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert offline_reason() is None  # behind a proxy the download itself decides


def test_weights_in_the_hub_cache_are_found_without_network(tmp_path):
    repo = tmp_path / "models--timm--vit_base_patch16_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"weights")
    assert cached_weight_file("ViT-B-16", "openai", str(tmp_path)) == snapshot / "open_clip_pytorch_model.bin"
    assert cached_weight_file("ViT-B-16", "openai", str(tmp_path / "elsewhere")) is None
