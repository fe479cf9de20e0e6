"""Saving and loading the course's trained models.

Every shipped model lives in ``trained_models/<name>/`` as four files:

- ``weights.pt``: the ``state_dict`` (loaded with ``torch.load(..., weights_only=True)``);
- ``config.json``: plain data, ``{"model": {...}, "training": {...}}``; ``model`` is enough to
  rebuild the architecture, ``training`` records how the weights were made;
- ``metrics.json``: what was measured on the final weights at the end of training;
- ``snapshots.pt`` (Chapter 3 only): weight snapshots over training, read with
  :func:`load_snapshots`;
- ``weights.sha256``: the SHA-256 of ``weights.pt``, so a truncated or altered file is caught,
  (for a model whose training run ships, the SHA-256 of ``snapshots.pt`` too), and on a line the SHA-256 of ``config.json``'s ``model`` section as it was when the
  weights were saved, so an edited architecture field that changes no weight shape (``act_fn``,
  ``context_timesteps``, ...) is caught too.

Anything wrong with these files raises :class:`CheckpointError`, whose message names the
problem and the command that fixes it; a bad ``device`` argument raises ``ValueError``. The
weights are read with ``weights_only=True``: a pickle that would run code is refused, never run.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from utils.device import resolve_device
from utils.files import atomic_path, write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINED_MODELS_DIR = REPO_ROOT / "trained_models"

WEIGHTS_FILE = "weights.pt"
SNAPSHOTS_FILE = "snapshots.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
HASH_FILE = "weights.sha256"
CONFIG_FINGERPRINT_NAME = "config.json:model"  # the label of the second line of weights.sha256
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


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


def config_fingerprint(model_config: dict[str, Any]) -> str:
    """SHA-256 of a ``model`` config section in a canonical JSON form (sorted keys, no spaces)."""
    canonical = json.dumps(model_config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def save_checkpoint(
    model: torch.nn.Module,
    directory: str | Path,
    config: dict[str, Any],
    metrics: dict[str, Any],
    snapshots: dict[int, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write ``weights.pt``, ``config.json``, ``metrics.json`` and ``weights.sha256``.

    ``config`` must be ``{"model": ..., "training": ...}`` of plain JSON data. ``snapshots`` (epoch
    to named weights, every snapshot with the same names and shapes) also writes ``snapshots.pt``:
    ``{"epochs": [n], name: [n, *shape], ...}``.
    """
    if not isinstance(config, dict) or set(config) != {"model", "training"}:
        raise ValueError("config must have exactly the keys 'model' and 'training'")
    texts = {}
    for file_name, content in ((CONFIG_FILE, config), (METRICS_FILE, metrics)):
        try:
            texts[file_name] = json.dumps(content, indent=2, sort_keys=True, allow_nan=True) + "\n"
        except (TypeError, ValueError) as error:
            raise ValueError(f"{file_name} must hold plain JSON data ({error}); convert tensors with float()") from None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    # Each file is written to a temporary file and moved into place, so a crash never leaves half
    # a file; the hash goes last, so a crash in between is caught by the loader as a mismatch.
    with atomic_path(directory / WEIGHTS_FILE) as temporary:
        torch.save(state_dict, temporary)
    for file_name, text in texts.items():
        write_text(directory / file_name, text)
    hash_lines = f"{sha256_of(directory / WEIGHTS_FILE)}  {WEIGHTS_FILE}\n"
    if snapshots:
        epochs = sorted(snapshots)
        names = list(snapshots[epochs[0]])
        stacked: dict[str, torch.Tensor] = {"epochs": torch.tensor(epochs, dtype=torch.int64)}
        for name in names:
            stacked[name] = torch.stack([snapshots[epoch][name].detach().cpu() for epoch in epochs])
        with atomic_path(directory / SNAPSHOTS_FILE) as temporary:
            torch.save(stacked, temporary)
        hash_lines += f"{sha256_of(directory / SNAPSHOTS_FILE)}  {SNAPSHOTS_FILE}\n"
    hash_lines += f"{config_fingerprint(json.loads(texts[CONFIG_FILE])['model'])}  {CONFIG_FINGERPRINT_NAME}\n"
    write_text(directory / HASH_FILE, hash_lines)
    return directory


def _entry(name: str) -> ModelEntry:
    if not isinstance(name, str) or name not in MODELS:
        raise CheckpointError(
            f"Unknown model {name!r}. The course ships: {', '.join(sorted(MODELS))}."
        ) from None
    return MODELS[name]


def _require_file(path: Path, what: str, fix: str) -> None:
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a folder, not a file. {fix}")
    if not path.is_file():
        raise CheckpointError(f"{what} {path} is missing. {fix}")


def _read_text(path: Path, fix: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise CheckpointError(f"{path} is not UTF-8 text (byte {error.start} is not); it is damaged. {fix}") from None
    except OSError as error:
        raise CheckpointError(f"{path} cannot be read ({error.strerror or error}). {fix}") from None


def _read_json(path: Path, fix: str) -> dict[str, Any]:
    try:
        return json.loads(_read_text(path, fix))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error.msg}, line {error.lineno}). {fix}") from None


def checkpoint_dir(name: str) -> Path:
    """Folder of a shipped model, e.g. ``trained_models/modular_addition``."""
    return TRAINED_MODELS_DIR / _entry(name).directory


def _fix_hint(name: str, directory: Path) -> str:
    entry = _entry(name)
    relative = directory.relative_to(REPO_ROOT) if directory.is_relative_to(REPO_ROOT) else directory
    shipped = directory.resolve() == (TRAINED_MODELS_DIR / entry.directory).resolve()
    retrain = f"{entry.train_command} --ship --overwrite" if shipped else f"{entry.train_command} --out {relative}"
    return (
        f"Fix: restore it with `git checkout -- {relative}` (or re-download the repository), "
        f"or retrain it with `{retrain}`."
    )


def _checkpoint_folder(name: str, directory: str | Path | None) -> Path:
    """The folder to read, checked: it exists and is a folder."""
    if directory is None:
        return checkpoint_dir(name)
    if not isinstance(directory, (str, Path)):
        raise CheckpointError(f"directory must be a path (str or Path), got {type(directory).__name__}")
    folder = Path(directory)
    if folder.is_file():
        raise CheckpointError(f"Checkpoint folder {folder} is a file; pass the folder that holds {WEIGHTS_FILE}")
    if not folder.is_dir():
        raise CheckpointError(f"Checkpoint folder {folder} does not exist. {_fix_hint(name, folder)}")
    return folder


def _recorded_hashes(hash_path: Path, fix: str) -> tuple[str, str | None]:
    """The weights' SHA-256 and the config fingerprint recorded in ``weights.sha256``."""
    lines = [line.split() for line in _read_text(hash_path, fix).splitlines() if line.strip()]
    weights = next((fields[0] for fields in lines if fields[1:] == [WEIGHTS_FILE]), None)
    if weights is None and lines and len(lines[0]) == 1:
        weights = lines[0][0]  # a bare hash, as `sha256sum` prints it without the file name
    config = next((fields[0] for fields in lines if fields[1:] == [CONFIG_FINGERPRINT_NAME]), None)
    for value in (weights, config):
        if value is not None and not _HEX_SHA256.fullmatch(value):
            raise CheckpointError(
                f"{hash_path} records {value[:20]!r}, which is not a 64-digit SHA-256. {fix}"
            )
    if weights is None:
        raise CheckpointError(f"{hash_path} records no SHA-256 for {WEIGHTS_FILE}. {fix}")
    return weights, config


def _read_state_dict(weights_path: Path, fix: str) -> dict[str, torch.Tensor]:
    """``torch.load(..., weights_only=True)``, with torch's errors turned into one line of ours.

    Torch's own message for a refused pickle suggests retrying with ``weights_only=False``, which
    would run whatever code the file carries; it is never passed on.
    """
    try:
        state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(error))
        if unsafe:
            raise CheckpointError(
                f"Checkpoint {weights_path} is refused: it asks to import {unsafe.group(1)}, which could run code "
                f"when unpickled, so it is not a plain state dict and was not loaded. {fix}"
            ) from None
        raise CheckpointError(
            f"Checkpoint {weights_path} cannot be read (not a torch file holding a state dict). {fix}"
        ) from None
    except Exception as error:  # noqa: BLE001 - any failure to read means a bad file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "weights_only" in reason:
            reason = type(error).__name__
        raise CheckpointError(f"Checkpoint {weights_path} cannot be read ({reason[:200]}). {fix}") from None
    if not isinstance(state_dict, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state_dict.items()
    ):
        raise CheckpointError(
            f"Checkpoint {weights_path} is not a state dict (a dict of named tensors), got "
            f"{type(state_dict).__name__}. {fix}"
        )
    return state_dict


def load_config(name: str, directory: str | Path | None = None) -> dict[str, Any]:
    """The ``config.json`` of a shipped model: ``{"model": ..., "training": ...}``."""
    directory = _checkpoint_folder(name, directory)
    path = directory / CONFIG_FILE
    _require_file(path, "Checkpoint config", _fix_hint(name, directory))
    config = _read_json(path, _fix_hint(name, directory))
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{path} has no 'model' section (a JSON object). {_fix_hint(name, directory)}")
    return config


def load_metrics(name: str, directory: str | Path | None = None) -> dict[str, Any]:
    """The metrics measured on a shipped model at the end of its training run."""
    directory = _checkpoint_folder(name, directory)
    path = directory / METRICS_FILE
    _require_file(path, "Checkpoint metrics", _fix_hint(name, directory))
    metrics = _read_json(path, _fix_hint(name, directory))
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{path} must hold a JSON object. {_fix_hint(name, directory)}")
    return metrics


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
    overrides where the checkpoint is read from (used by tests and by training runs, e.g.
    ``runs/planarity``). A bad ``device`` (``"banana"``, ``"cuda"`` without a GPU, ``"meta"``)
    raises ``ValueError``; anything wrong with the files raises :class:`CheckpointError`.
    """
    entry = _entry(name)
    target_device = resolve_device(device)  # a bad device fails here, before any reading
    directory = _checkpoint_folder(name, directory)
    fix = _fix_hint(name, directory)
    weights_path = directory / WEIGHTS_FILE
    hash_path = directory / HASH_FILE
    for path in (weights_path, hash_path, directory / CONFIG_FILE):
        _require_file(path, "Checkpoint file", fix)
    recorded, recorded_config = _recorded_hashes(hash_path, fix)
    actual = sha256_of(weights_path)
    if recorded != actual:  # all 64 hex digits
        raise CheckpointError(
            f"Checkpoint {weights_path} is corrupted: its SHA-256 is {actual[:12]}... but "
            f"{HASH_FILE} records {recorded[:12]}... {fix}"
        )
    config = load_config(name, directory)
    try:
        model = entry.build(config["model"])
    except (TypeError, ValueError, KeyError, AssertionError) as error:
        message = str(error).splitlines()[0] if str(error) else ""
        raise CheckpointError(
            f"{directory / CONFIG_FILE} cannot build a {name} model ({type(error).__name__}: {message}). {fix}"
        ) from None
    state_dict = _read_state_dict(weights_path, fix)
    _check_state_dict(model, state_dict, directory / CONFIG_FILE, fix)
    if recorded_config is None:
        raise CheckpointError(
            f"{hash_path} records no fingerprint of the config's 'model' section ('{CONFIG_FINGERPRINT_NAME}' "
            f"line), so config.json cannot be checked against the weights. {fix}"
        )
    if config_fingerprint(config["model"]) != recorded_config:
        raise CheckpointError(
            f"{directory / CONFIG_FILE} does not match the weights: its 'model' section differs from the one "
            f"{WEIGHTS_FILE} was saved with (a changed act_fn, context_timesteps, ... would silently change "
            f"what the weights compute). {fix}"
        )
    model.load_state_dict(state_dict)
    move_to_device(model, target_device)
    model.eval()
    return model


def load_snapshots(
    name: str = "modular_addition", directory: str | Path | None = None
) -> dict[int, dict[str, torch.Tensor]]:
    """The weight snapshots a training run shipped: ``{epoch: {parameter name: float16 tensor}}``.

    Load one into a model with ``model.load_state_dict(snapshot, strict=False)`` (the frozen
    biases are not stored). The file is checked against its SHA-256 in ``weights.sha256`` first.
    """
    _entry(name)
    directory = _checkpoint_folder(name, directory)
    fix = _fix_hint(name, directory)
    path, hash_path = directory / SNAPSHOTS_FILE, directory / HASH_FILE
    _require_file(hash_path, "Checkpoint file", fix)
    recorded = next((fields[0] for fields in (line.split() for line in _read_text(hash_path, fix).splitlines())
                     if fields[1:] == [SNAPSHOTS_FILE]), None)
    if recorded is None:
        raise CheckpointError(f"{hash_path} records no SHA-256 for {SNAPSHOTS_FILE}: this checkpoint ships no "
                              f"training snapshots. {fix}")
    _require_file(path, "Snapshot file", fix)
    actual = sha256_of(path)
    if actual != recorded:
        raise CheckpointError(f"Snapshots {path} are corrupted: their SHA-256 is {actual[:12]}... but {HASH_FILE} "
                              f"records {recorded[:12]}... {fix}")
    stacked = _read_state_dict(path, fix)
    epochs = stacked.pop("epochs", None)
    if epochs is None or epochs.ndim != 1 or any(value.shape[:1] != epochs.shape for value in stacked.values()):
        raise CheckpointError(f"{path} does not hold one weight per snapshot epoch. {fix}")
    return {int(epoch): {key: value[index] for key, value in stacked.items()} for index, epoch in enumerate(epochs)}


def move_to_device(model: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """Move a model to ``device`` quietly, keeping a HookedTransformer's ``cfg.device`` in step."""
    device = resolve_device(device)
    torch.nn.Module.to(model, device)
    for module in model.modules():
        config = getattr(module, "cfg", None)
        if config is not None and hasattr(config, "device"):
            config.device = device
    return model
