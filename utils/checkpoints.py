"""Saving and loading the course's trained models.

Every shipped model lives in ``trained_models/<name>/`` as four files:

- ``weights.pt``: the ``state_dict`` (loaded with ``torch.load(..., weights_only=True)``);
- ``config.json``: plain data, ``{"model": {...}, "training": {...}}``; ``model`` is enough to
  rebuild the architecture, ``training`` records how the weights were made;
- ``metrics.json``: what was measured on the final weights at the end of training;
- ``weights.sha256``: the SHA-256 of ``weights.pt``, so a truncated or altered file is caught.

Anything wrong with these files raises :class:`CheckpointError`, whose message names the
problem and the command that fixes it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from utils.device import get_device

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINED_MODELS_DIR = REPO_ROOT / "trained_models"

WEIGHTS_FILE = "weights.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HASH_FILE = "weights.sha256"


class CheckpointError(RuntimeError):
    """A shipped checkpoint is missing, corrupted, or does not match its config."""


@dataclass(frozen=True)
class ModelEntry:
    """How to rebuild and retrain one shipped model."""

    directory: str
    builder: str  # "module:function"; the function takes config["model"] and returns an nn.Module
    train_command: str

    def build(self, model_config: dict[str, Any]) -> torch.nn.Module:
        module_name, function_name = self.builder.split(":")
        build_fn: Callable[[dict[str, Any]], torch.nn.Module] = getattr(
            importlib.import_module(module_name), function_name
        )
        return build_fn(model_config)


MODELS: dict[str, ModelEntry] = {
    "modular_addition": ModelEntry(
        "modular_addition", "utils.modular.model:build_model", "python -m utils.modular train"
    ),
    "planarity": ModelEntry(
        "planarity", "utils.planarity.model:build_model", "python -m utils.planarity train"
    ),
    "memory_dt": ModelEntry(
        "memory_dt", "utils.memory_dt.model:build_model", "python -m utils.memory_dt train"
    ),
}


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    model: torch.nn.Module,
    directory: str | Path,
    config: dict[str, Any],
    metrics: dict[str, Any],
) -> Path:
    """Write ``weights.pt``, ``config.json``, ``metrics.json`` and ``weights.sha256``.

    ``config`` must be ``{"model": ..., "training": ...}`` of plain JSON data.
    """
    if set(config) != {"model", "training"}:
        raise ValueError("config must have exactly the keys 'model' and 'training'")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    torch.save(state_dict, directory / WEIGHTS_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (directory / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    (directory / HASH_FILE).write_text(f"{sha256_of(directory / WEIGHTS_FILE)}  {WEIGHTS_FILE}\n")
    return directory


def _entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise CheckpointError(
            f"Unknown model {name!r}. The course ships: {', '.join(sorted(MODELS))}."
        ) from None
    return MODELS[name]


def _read_json(path: Path, fix: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error.msg}, line {error.lineno}). {fix}") from None


def checkpoint_dir(name: str) -> Path:
    """Folder of a shipped model, e.g. ``trained_models/modular_addition``."""
    return TRAINED_MODELS_DIR / _entry(name).directory


def _fix_hint(name: str, directory: Path) -> str:
    entry = _entry(name)
    relative = directory.relative_to(REPO_ROOT) if directory.is_relative_to(REPO_ROOT) else directory
    return (
        f"Fix: restore it with `git checkout -- {relative}` (or re-download the repository), "
        f"or retrain it with `{entry.train_command}`."
    )


def load_config(name: str, directory: str | Path | None = None) -> dict[str, Any]:
    """The ``config.json`` of a shipped model: ``{"model": ..., "training": ...}``."""
    directory = Path(directory) if directory is not None else checkpoint_dir(name)
    path = directory / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"Checkpoint config {path} is missing. {_fix_hint(name, directory)}")
    config = _read_json(path, _fix_hint(name, directory))
    if not isinstance(config, dict) or "model" not in config:
        raise CheckpointError(f"{path} has no 'model' section. {_fix_hint(name, directory)}")
    return config


def load_metrics(name: str, directory: str | Path | None = None) -> dict[str, Any]:
    """The metrics measured on a shipped model at the end of its training run."""
    directory = Path(directory) if directory is not None else checkpoint_dir(name)
    path = directory / METRICS_FILE
    if not path.exists():
        raise CheckpointError(f"Checkpoint metrics {path} is missing. {_fix_hint(name, directory)}")
    return _read_json(path, _fix_hint(name, directory))


def _check_state_dict(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], config_path: Path, fix: str
) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"weights lack {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"weights have extra {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
        raise CheckpointError(
            f"{config_path} does not match the weights: {'; '.join(parts)}. {fix}"
        )
    for key, tensor in expected.items():
        if tuple(state_dict[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{config_path} does not match the weights: {key} has shape "
                f"{tuple(state_dict[key].shape)} in the weights but {tuple(tensor.shape)} by the "
                f"config. {fix}"
            )


def load_model(
    name: str,
    device: str | torch.device | None = None,
    directory: str | Path | None = None,
) -> torch.nn.Module:
    """Load a shipped model by name, in eval mode, on ``device`` (default: CUDA if present, else CPU).

    ``name`` is one of ``"modular_addition"``, ``"planarity"``, ``"memory_dt"``. ``directory``
    overrides where the checkpoint is read from (used by tests and by training runs).
    """
    entry = _entry(name)
    directory = Path(directory) if directory is not None else TRAINED_MODELS_DIR / entry.directory
    fix = _fix_hint(name, directory)
    weights_path = directory / WEIGHTS_FILE
    hash_path = directory / HASH_FILE
    for path in (weights_path, hash_path, directory / CONFIG_FILE):
        if not path.exists():
            raise CheckpointError(f"Checkpoint file {path} is missing. {fix}")
    recorded_fields = hash_path.read_text().split()
    recorded = recorded_fields[0] if recorded_fields else ""
    actual = sha256_of(weights_path)
    if recorded != actual:
        raise CheckpointError(
            f"Checkpoint {weights_path} is corrupted: its SHA-256 is {actual[:12]}... but "
            f"{HASH_FILE} records {recorded[:12] or 'nothing'}... {fix}"
        )
    config = load_config(name, directory)
    try:
        model = entry.build(config["model"])
    except (TypeError, ValueError, KeyError, AssertionError) as error:
        raise CheckpointError(
            f"{directory / CONFIG_FILE} cannot build a {name} model ({type(error).__name__}: {error}). {fix}"
        ) from None
    try:
        state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(f"Checkpoint {weights_path} cannot be read ({error}). {fix}") from None
    _check_state_dict(model, state_dict, directory / CONFIG_FILE, fix)
    model.load_state_dict(state_dict)
    move_to_device(model, device if device is not None else get_device())
    model.eval()
    return model


def move_to_device(model: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """Move a model to ``device`` quietly, keeping a HookedTransformer's ``cfg.device`` in step."""
    device = torch.device(device)
    torch.nn.Module.to(model, device)
    for module in model.modules():
        config = getattr(module, "cfg", None)
        if config is not None and hasattr(config, "device"):
            config.device = device
    return model
