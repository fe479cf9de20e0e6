"""Chapter 3: a one-layer transformer that grokked ``a + b mod p``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from utils.checkpoints import CheckpointError, checkpoint_dir

TRAINING_LOG_FILE = "training_log.json"


def load_training_log(directory: str | Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """The shipped model's training log: ``losses`` (train and test loss every 100 epochs) and
    ``progress_measures`` (restricted loss, excluded loss and total squared weight on snapshots).

    ``directory`` reads another run's log (e.g. ``runs/modular_addition``) instead of the shipped one."""
    if directory is not None and not isinstance(directory, (str, Path)):
        raise ValueError(f"directory must be a path (str or Path), got {type(directory).__name__}")
    path = (checkpoint_dir("modular_addition") if directory is None else Path(directory)) / TRAINING_LOG_FILE
    if not path.exists():
        raise CheckpointError(
            f"{path} is missing. Fix: restore it with `git checkout -- trained_models/modular_addition` "
            "or retrain with `python -m utils.modular train --ship --overwrite`."
        )
    return json.loads(path.read_text())
