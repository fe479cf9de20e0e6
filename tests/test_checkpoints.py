"""The loader: shipped models load, and every broken checkpoint stops with a one-line fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from utils import CheckpointError, get_device, load_config, load_metrics, load_model
from utils.checkpoints import HASH_FILE, WEIGHTS_FILE, checkpoint_dir, save_checkpoint, sha256_of


@pytest.fixture
def modular_copy(tmp_path: Path) -> Path:
    target = tmp_path / "modular_addition"
    shutil.copytree(checkpoint_dir("modular_addition"), target)
    return target


def test_load_model_returns_eval_model_on_default_device():
    model = load_model("modular_addition")
    assert not model.training
    assert next(model.parameters()).device.type == get_device().type
    assert model.cfg.device.type == get_device().type


def test_shipped_hash_and_metrics_are_consistent():
    directory = checkpoint_dir("modular_addition")
    assert (directory / HASH_FILE).read_text().split()[0] == sha256_of(directory / WEIGHTS_FILE)
    assert load_metrics("modular_addition")["accuracy_all_pairs"] == 1.0
    assert load_config("modular_addition")["training"]["weight_decay"] == 1.0


def test_unknown_model_names_the_available_ones():
    with pytest.raises(CheckpointError, match="ships: .*modular_addition"):
        load_model("modular_subtraction")


def test_missing_weights_say_how_to_restore(modular_copy: Path):
    (modular_copy / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"weights.pt is missing.*git checkout.*python -m utils.modular train"):
        load_model("modular_addition", directory=modular_copy)


def test_corrupted_weights_are_caught_by_the_hash(modular_copy: Path):
    weights = modular_copy / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="corrupted.*SHA-256"):
        load_model("modular_addition", directory=modular_copy)


def test_unreadable_weights_with_matching_hash(modular_copy: Path):
    weights = modular_copy / WEIGHTS_FILE
    weights.write_bytes(b"not a checkpoint")
    (modular_copy / HASH_FILE).write_text(f"{sha256_of(weights)}  {WEIGHTS_FILE}\n")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model("modular_addition", directory=modular_copy)


def test_config_that_does_not_fit_the_weights(modular_copy: Path):
    config = json.loads((modular_copy / "config.json").read_text())
    config["model"]["d_mlp"] = 256
    (modular_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"does not match the weights: .*shape \(128, 512\).*\(128, 256\)"):
        load_model("modular_addition", directory=modular_copy)


def test_config_that_cannot_build_a_model(modular_copy: Path):
    config = json.loads((modular_copy / "config.json").read_text())
    config["model"]["n_headz"] = config["model"].pop("n_heads")
    (modular_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="cannot build a modular_addition model"):
        load_model("modular_addition", directory=modular_copy)


def test_config_that_is_not_json(modular_copy: Path):
    (modular_copy / "config.json").write_text("{ d_model: 128")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model("modular_addition", directory=modular_copy)


def test_save_then_load_round_trip(tmp_path: Path):
    model = load_model("modular_addition", device="cpu")
    config = load_config("modular_addition")
    save_checkpoint(model, tmp_path / "copy", config, {"note": "round trip"})
    again = load_model("modular_addition", device="cpu", directory=tmp_path / "copy")
    for (name, original), (_, loaded) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(original, loaded), name
    assert load_metrics("modular_addition", tmp_path / "copy") == {"note": "round trip"}


def test_save_checkpoint_requires_model_and_training_sections(tmp_path: Path):
    model = load_model("modular_addition", device="cpu")
    with pytest.raises(ValueError, match="'model' and 'training'"):
        save_checkpoint(model, tmp_path, {"model": {}}, {})
