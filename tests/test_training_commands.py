"""The three training commands: nothing shipped is overwritten by default, and bad arguments fail
before any training, in one line."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from utils import training
from utils.checkpoints import REPO_ROOT, load_model

COMMANDS = {
    "modular_addition": "utils.modular.train",
    "planarity": "utils.planarity.train",
    "memory_dt": "utils.memory_dt.train",
}


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch) -> Path:
    """runs/ and trained_models/ moved to a temporary folder (with a 'shipped' weights.pt in each)."""
    runs, shipped = tmp_path / "runs", tmp_path / "trained_models"
    for name in COMMANDS:
        (shipped / name).mkdir(parents=True)
        (shipped / name / "weights.pt").write_bytes(b"the shipped weights")
    monkeypatch.setattr(training, "RUNS_DIR", runs)
    monkeypatch.setattr(training, "TRAINED_MODELS_DIR", shipped)
    return tmp_path


def _parse(name: str, *argv: str):
    return importlib.import_module(COMMANDS[name]).parse_args(list(argv))


def _refused(name: str, capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        _parse(name, *argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"python -m utils.") and ": error: " in error
    return error


@pytest.mark.parametrize("name", COMMANDS)
def test_default_output_is_runs_not_trained_models(sandbox: Path, name: str):
    args = _parse(name)
    assert args.out == sandbox / "runs" / name and args.run_dir == sandbox / "runs" / name
    assert (sandbox / "trained_models" / name / "weights.pt").read_bytes() == b"the shipped weights"


@pytest.mark.parametrize("name", COMMANDS)
def test_ship_refuses_to_replace_a_shipped_checkpoint_without_overwrite(sandbox: Path, name: str, capsys):
    error = _refused(name, capsys, "--ship")
    assert f"trained_models/{name} already holds the shipped checkpoint; add --overwrite" in error
    assert _parse(name, "--ship", "--overwrite").out == sandbox / "trained_models" / name
    (sandbox / "trained_models" / name / "weights.pt").unlink()
    assert _parse(name, "--ship").out == sandbox / "trained_models" / name  # nothing there yet


@pytest.mark.parametrize("name", COMMANDS)
def test_out_into_trained_models_and_flag_mixups_are_refused(sandbox: Path, name: str, capsys):
    inside = str(sandbox / "trained_models" / name)
    assert "is inside trained_models/" in _refused(name, capsys, "--out", inside)
    assert "not both" in _refused(name, capsys, "--ship", "--out", str(sandbox / "elsewhere"))
    assert "--overwrite only goes with --ship" in _refused(name, capsys, "--overwrite")


@pytest.mark.parametrize("name", COMMANDS)
def test_unwritable_out_fails_before_training(sandbox: Path, name: str, capsys):
    blocker = sandbox / "a-file"
    blocker.write_text("not a folder")
    assert "is a file, not a folder" in _refused(name, capsys, "--out", str(blocker))
    assert "cannot be written" in _refused(name, capsys, "--out", str(blocker / "below"))
    assert "--run-dir" in _refused(name, capsys, "--run-dir", str(blocker / "below"))


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("argv, message", [
    (["--resume-every", "0"], "--resume-every must be at least 1, got 0"),
    (["--resume-every", "-3"], "--resume-every must be at least 1"),
    (["--device", "banana"], "--device: unknown device 'banana'; use 'cpu' or 'cuda'"),
    (["--device", "meta"], "--device: device 'meta' holds tensor shapes but no values"),
])
def test_bad_shared_arguments(sandbox: Path, name: str, argv: list[str], message: str, capsys):
    assert message in _refused(name, capsys, *argv)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", COMMANDS)
def test_cuda_without_a_gpu_fails_at_once(sandbox: Path, name: str, capsys):
    assert "no usable CUDA GPU" in _refused(name, capsys, "--device", "cuda")


@pytest.mark.parametrize("name, argv, message", [
    ("modular_addition", ["--max-epochs", "-1"], "--max-epochs must be a finite number above 0, got -1"),
    ("modular_addition", ["--max-epochs", "0"], "--max-epochs must be a finite number above 0"),
    ("modular_addition", ["--stop-test-loss", "nan"], "--stop-test-loss must be a finite number above 0, got nan"),
    ("planarity", ["--lr", "nan"], "--lr must be a finite number above 0, got nan"),
    ("planarity", ["--lr", "inf"], "--lr must be a finite number above 0"),
    ("planarity", ["--lr", "-0.001"], "--lr must be a finite number above 0"),
    ("planarity", ["--workers", "0"], "--workers must be at least 1, got 0"),
    ("memory_dt", ["--steps", "0"], "--steps must be at least 1, got 0"),
])
def test_bad_command_specific_arguments(sandbox: Path, name: str, argv: list[str], message: str, capsys):
    assert message in _refused(name, capsys, *argv)


def test_the_command_line_fails_at_once_on_an_unwritable_out(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = subprocess.run(
        [sys.executable, "-m", "utils.modular", "train", "--device", "cpu", "--out", str(blocker / "model")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "cannot be written" in result.stderr
    assert "epoch" not in result.stdout  # not one epoch was trained


# --------------------------------------------------------------------------------------------
# A damaged resume.pt says to use --fresh


def _tiny(name: str, tmp_path: Path) -> list[str]:
    common = ["--device", "cpu", "--out", str(tmp_path / "out"), "--run-dir", str(tmp_path / "run")]
    return common + {
        "modular_addition": ["--max-epochs", "2"],
        "planarity": ["--epochs", "1", "--train-size", "144", "--batch-size", "64", "--eval-graphs", "4",
                      "--workers", "1"],
        "memory_dt": ["--tiny", "--steps", "2", "--eval-episodes", "1"],
    }[name]


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("content", [b"not a torch file", "a list"])
def test_a_damaged_resume_state_says_to_use_fresh(tmp_path: Path, name: str, content):
    (tmp_path / "run").mkdir()
    resume = tmp_path / "run" / "resume.pt"
    if content == "a list":
        torch.save([1, 2, 3], resume)
    else:
        resume.write_bytes(content)
    module = importlib.import_module(COMMANDS[name])
    with pytest.raises(SystemExit) as exited:
        module.train(module.parse_args(_tiny(name, tmp_path)))
    message = str(exited.value.code)
    assert "cannot resume" in message and "rerun with --fresh" in message and "\n" not in message
    assert "weights_only" not in message


def test_fresh_ignores_a_damaged_resume_state_and_replaces_it(tmp_path: Path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "resume.pt").write_bytes(b"garbage")
    module = importlib.import_module(COMMANDS["modular_addition"])
    module.train(module.parse_args(_tiny("modular_addition", tmp_path) + ["--fresh", "--resume-every", "1"]))
    assert torch.load(tmp_path / "run" / "resume.pt", weights_only=True)["epoch"] == 2
    load_model("modular_addition", device="cpu", directory=tmp_path / "out")
    assert not list((tmp_path / "run").glob(".*.tmp")) and not list((tmp_path / "out").glob(".*.tmp"))



def test_training_works_with_autograd_turned_off_by_the_caller(tmp_path):
    """A notebook turns autograd off globally; the training commands must still train."""
    module = importlib.import_module(COMMANDS["modular_addition"])
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    try:
        module.train(module.parse_args(_tiny("modular_addition", tmp_path) + ["--fresh"]))
    finally:
        torch.set_grad_enabled(previous)
