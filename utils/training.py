"""What the three training commands share: where they write, the device, the resumable state.

Nothing is destructive by default. A command writes its checkpoint to ``runs/<name>`` (git-ignored);
only ``--ship`` writes to ``trained_models/<name>``, the checkpoint the notebooks load, and when one
is already there it also needs ``--overwrite``. Every argument is checked before any data is made
or any step is trained: an unwritable ``--out``, a device this machine lacks, ``--resume-every 0``
all fail at once, in one line.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from utils.checkpoints import REPO_ROOT, TRAINED_MODELS_DIR, WEIGHTS_FILE
from utils.device import resolve_device
from utils.files import atomic_path, check_writable_folder

RUNS_DIR = REPO_ROOT / "runs"


def add_output_arguments(parser: argparse.ArgumentParser, name: str, resume_every: int, unit: str) -> None:
    """``--out``, ``--ship``, ``--overwrite``, ``--run-dir``, ``--resume-every``, ``--fresh``, ``--device``."""
    parser.add_argument("--out", type=Path, default=None,
                        help=f"where the checkpoint is written (default: runs/{name})")
    parser.add_argument("--ship", action="store_true",
                        help=f"write the checkpoint to trained_models/{name}, the one the course loads")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --ship: replace the shipped checkpoint already there (git keeps the old one)")
    parser.add_argument("--run-dir", type=Path, default=RUNS_DIR / name,
                        help="where the resumable state is kept")
    parser.add_argument("--resume-every", type=int, default=resume_every,
                        help=f"{unit} between resumable states")
    parser.add_argument("--fresh", action="store_true", help="ignore a saved resumable state")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")


def check_output_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, name: str) -> None:
    """Check the arguments of :func:`add_output_arguments` and resolve ``args.out`` and ``args.device``.

    Calls ``parser.error`` (exit status 2, one line) on anything that would fail later.
    """
    try:
        args.device = str(resolve_device(args.device))
    except ValueError as error:
        parser.error(f"--device: {error}")
    if args.resume_every < 1:
        parser.error(f"--resume-every must be at least 1, got {args.resume_every}")
    shipped = TRAINED_MODELS_DIR / name
    if args.ship and args.out is not None:
        parser.error(f"pass --ship (writes trained_models/{name}) or --out DIR, not both")
    if args.overwrite and not args.ship:
        parser.error(f"--overwrite only goes with --ship; without --ship the checkpoint goes to runs/{name}")
    if args.ship:
        args.out = shipped
        if (shipped / WEIGHTS_FILE).exists() and not args.overwrite:
            parser.error(
                f"trained_models/{name} already holds the shipped checkpoint; add --overwrite to replace it "
                f"(git keeps the old one), or leave out --ship to write to runs/{name}"
            )
    elif args.out is None:
        args.out = RUNS_DIR / name
    elif args.out.resolve().is_relative_to(TRAINED_MODELS_DIR.resolve()):
        parser.error(
            f"--out {args.out} is inside trained_models/, where the shipped checkpoints live; use --ship "
            "(and --overwrite) to replace the shipped one, or write somewhere else"
        )
    try:
        check_writable_folder(args.out, "checkpoint", "--out")
        check_writable_folder(args.run_dir, "resumable state", "--run-dir")
    except ValueError as error:
        parser.error(str(error))


def check_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    """Each ``args.<name>`` must be a finite number above zero (``--lr nan`` fails here, not later)."""
    for name in names:
        value = getattr(args, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            parser.error(f"--{name.replace('_', '-')} must be a finite number above 0, got {value}")


def load_resume_state(path: Path, device: torch.device) -> dict[str, Any]:
    """Read a resumable state; a damaged file stops the command with a one-line hint to use ``--fresh``."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception:  # noqa: BLE001 - any failure to read means a damaged file
        raise resume_failed(path) from None
    if not isinstance(state, dict):
        raise resume_failed(path)
    return state


def resume_failed(path: Path) -> SystemExit:
    """The error for a resumable state that cannot be used (damaged or from another version)."""
    return SystemExit(
        f"{path} is damaged or was not written by this command, so the run cannot resume from it; "
        "rerun with --fresh to start over (the file is then replaced)"
    )


def save_resume_state(state: dict[str, Any], path: Path) -> None:
    """Write a resumable state atomically: a run killed while saving keeps the previous one."""
    with atomic_path(path) as temporary:
        torch.save(state, temporary)
