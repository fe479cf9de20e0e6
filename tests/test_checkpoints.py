"""The loader: shipped models load, and every broken checkpoint stops with a one-line fix."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --------------------------------------------------------------------------------------------
# Safety: a pickle that would run code is refused, never run, and torch's advice is not passed on


class _RunsCode:
    """Unpickling this object creates ``marker``: through ``Path.touch`` or a shell command."""

    def __init__(self, marker: Path, how: str) -> None:
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "shell":
            return (os.system, (f"touch {self.marker}",))
        return (Path.touch, (self.marker,))


def _malicious_checkpoint(directory: Path, marker: Path, how: str) -> None:
    weights = directory / WEIGHTS_FILE
    torch.save({"embed.W_E": torch.zeros(1), "payload": _RunsCode(marker, how)}, weights)
    recorded = (directory / HASH_FILE).read_text().splitlines()
    (directory / HASH_FILE).write_text(f"{sha256_of(weights)}  {WEIGHTS_FILE}\n{recorded[1]}\n")


@pytest.mark.parametrize("how", ["path", "shell"])
def test_malicious_pickle_with_a_matching_hash_is_refused_without_running(modular_copy: Path, tmp_path: Path, how: str):
    marker = tmp_path / "code-ran"
    _malicious_checkpoint(modular_copy, marker, how)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as refused:
        load_model("modular_addition", device="cpu", directory=modular_copy)
    message = str(refused.value)
    assert not marker.exists(), "unpickling the checkpoint ran its code"
    assert "refused" in message and "could run code" in message and "\n" not in message
    assert ("getattr" in message or "touch" in message) if how == "path" else "system" in message
    assert "weights_only=False" not in message and "weights_only" not in message
    assert refused.value.__cause__ is None and refused.value.__suppress_context__


def test_the_loader_reads_weights_with_weights_only(modular_copy: Path, monkeypatch):
    """Fails if the loader ever switches to weights_only=False (or drops the argument)."""
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_model("modular_addition", device="cpu", directory=modular_copy)
    assert calls == [True]


# --------------------------------------------------------------------------------------------
# The hash is compared on all 64 digits


@pytest.mark.parametrize("keep", [12, 63])
def test_a_hash_matching_only_on_a_prefix_is_refused(modular_copy: Path, keep: int):
    actual = sha256_of(modular_copy / WEIGHTS_FILE)
    wrong_digit = "0" if actual[keep] != "0" else "1"
    forged = actual[:keep] + wrong_digit * (64 - keep)
    recorded = (modular_copy / HASH_FILE).read_text().splitlines()
    (modular_copy / HASH_FILE).write_text(f"{forged}  {WEIGHTS_FILE}\n{recorded[1]}\n")
    with pytest.raises(CheckpointError, match="corrupted.*SHA-256"):
        load_model("modular_addition", device="cpu", directory=modular_copy)


def test_a_truncated_recorded_hash_is_refused(modular_copy: Path):
    actual = sha256_of(modular_copy / WEIGHTS_FILE)
    recorded = (modular_copy / HASH_FILE).read_text().splitlines()
    (modular_copy / HASH_FILE).write_text(f"{actual[:12]}  {WEIGHTS_FILE}\n{recorded[1]}\n")
    with pytest.raises(CheckpointError, match="not a 64-digit SHA-256"):
        load_model("modular_addition", device="cpu", directory=modular_copy)


# --------------------------------------------------------------------------------------------
# Devices, unreadable files, folders where files belong


@pytest.mark.parametrize("device, message", [
    ("banana", r"unknown device 'banana'; use 'cpu' or 'cuda'"),
    ("meta", r"'meta' holds tensor shapes but no values.*use 'cpu'"),
    ("cuda:99", r"(no usable CUDA GPU|does not exist)"),
    (3.5, r"device must be a string"),
])
def test_bad_devices_fail_in_one_line_before_loading(device, message):
    with pytest.raises(ValueError, match=message) as refused:
        load_model("modular_addition", device=device)
    assert "\n" not in str(refused.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_a_gpu():
    with pytest.raises(ValueError, match="no usable CUDA GPU; use 'cpu'"):
        load_model("modular_addition", device="cuda")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an Apple GPU")
def test_mps_where_there_is_none():
    with pytest.raises(ValueError, match="'mps'.*not available on this machine; use 'cpu'"):
        load_model("modular_addition", device="mps")


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=12))
def test_any_device_string_loads_or_fails_in_one_line(name: str):
    from utils.device import resolve_device

    try:
        device = resolve_device(name)
    except ValueError as error:
        assert "\n" not in str(error) and ("use 'cpu'" in str(error) or "use one of" in str(error))
    else:
        assert device.type in {"cpu", "cuda", "mps"}


@pytest.mark.parametrize("file_name", ["config.json", HASH_FILE, "metrics.json"])
def test_non_utf8_files_name_the_file(modular_copy: Path, file_name: str):
    (modular_copy / file_name).write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(CheckpointError, match=rf"{file_name} is not UTF-8 text.*git checkout"):
        if file_name == "metrics.json":
            load_metrics("modular_addition", modular_copy)
        else:
            load_model("modular_addition", device="cpu", directory=modular_copy)


@pytest.mark.parametrize("file_name", ["config.json", HASH_FILE, WEIGHTS_FILE, "metrics.json"])
def test_a_folder_where_a_file_belongs(modular_copy: Path, file_name: str):
    (modular_copy / file_name).unlink()
    (modular_copy / file_name).mkdir()
    with pytest.raises(CheckpointError, match=rf"{file_name} is a folder, not a file"):
        if file_name == "metrics.json":
            load_metrics("modular_addition", modular_copy)
        else:
            load_model("modular_addition", device="cpu", directory=modular_copy)


def test_a_file_or_nothing_where_the_folder_belongs(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file; pass the folder"):
        load_model("modular_addition", directory=tmp_path / "file")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_config("modular_addition", tmp_path / "absent")


def test_weights_that_are_not_a_state_dict(modular_copy: Path):
    weights = modular_copy / WEIGHTS_FILE
    torch.save([torch.zeros(2)], weights)
    recorded = (modular_copy / HASH_FILE).read_text().splitlines()
    (modular_copy / HASH_FILE).write_text(f"{sha256_of(weights)}  {WEIGHTS_FILE}\n{recorded[1]}\n")
    with pytest.raises(CheckpointError, match="is not a state dict"):
        load_model("modular_addition", device="cpu", directory=modular_copy)


# --------------------------------------------------------------------------------------------
# Config fields that change no weight shape are still checked against the weights


def _edit_config(directory: Path, **changes) -> None:
    config = json.loads((directory / "config.json").read_text())
    config["model"].update(changes)
    (directory / "config.json").write_text(json.dumps(config))


def test_changed_act_fn_is_refused(modular_copy: Path):
    _edit_config(modular_copy, act_fn="gelu")
    with pytest.raises(CheckpointError, match=r"does not match the weights: its 'model' section differs"):
        load_model("modular_addition", device="cpu", directory=modular_copy)


def test_changed_context_timesteps_is_refused(tmp_path: Path):
    copy = tmp_path / "memory_dt"
    shutil.copytree(checkpoint_dir("memory_dt"), copy)
    _edit_config(copy, context_timesteps=5)
    with pytest.raises(CheckpointError, match=r"config.json does not match the weights.*context_timesteps"):
        load_model("memory_dt", device="cpu", directory=copy)


def test_a_hash_file_without_the_config_fingerprint_is_refused(modular_copy: Path):
    (modular_copy / HASH_FILE).write_text((modular_copy / HASH_FILE).read_text().splitlines()[0] + "\n")
    with pytest.raises(CheckpointError, match="records no fingerprint"):
        load_model("modular_addition", device="cpu", directory=modular_copy)


def test_the_training_section_may_change(modular_copy: Path):
    config = json.loads((modular_copy / "config.json").read_text())
    config["training"]["note"] = "annotated by hand"
    (modular_copy / "config.json").write_text(json.dumps(config, indent=4))
    load_model("modular_addition", device="cpu", directory=modular_copy)


def test_save_checkpoint_is_atomic(tmp_path: Path, monkeypatch):
    model = load_model("modular_addition", device="cpu")
    config = load_config("modular_addition")
    target = save_checkpoint(model, tmp_path / "copy", config, {"note": "first"})
    before = (target / WEIGHTS_FILE).read_bytes()

    def crash(state, path):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, target, config, {"note": "second"})
    assert (target / WEIGHTS_FILE).read_bytes() == before
    assert sorted(path.name for path in target.iterdir()) == sorted(
        ["weights.pt", "config.json", "metrics.json", HASH_FILE])
    monkeypatch.undo()
    load_model("modular_addition", device="cpu", directory=target)
