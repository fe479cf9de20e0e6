"""The notebooks' setup cell: a no-op that finds the course locally; on Colab, clone and install.

Colab is simulated with THREE_CIRCUITS_FORCE_COLAB=1 and the repository address is pointed at a
local clone, so the real git clone and pip install run here without the network.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from utils.checkpoints import REPO_ROOT
from utils.colab import CLONE_URL, GITHUB_REPOSITORY, SETUP_CELL, badge_markdown, colab_url


def run_setup_cell() -> dict:
    namespace: dict = {}
    exec(compile(SETUP_CELL, "setup cell", "exec"), namespace)
    return namespace


def test_locally_the_cell_only_finds_the_course_root(monkeypatch):
    monkeypatch.delenv("THREE_CIRCUITS_FORCE_COLAB", raising=False)
    monkeypatch.delenv("THREE_CIRCUITS_ROOT", raising=False)
    monkeypatch.chdir(REPO_ROOT / "chapters" / "3_modular_arithmetic")
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: calls.append(args))
    namespace = run_setup_cell()
    assert namespace["IN_COLAB"] is False
    assert namespace["COURSE_ROOT"] == REPO_ROOT
    assert calls == [], "locally the setup cell must not clone or install anything"
    assert str(REPO_ROOT) in sys.path


def test_outside_the_course_the_environment_variable_names_it(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("THREE_CIRCUITS_FORCE_COLAB", raising=False)
    monkeypatch.setenv("THREE_CIRCUITS_ROOT", str(REPO_ROOT))
    monkeypatch.chdir(tmp_path)  # e.g. nbgrader's autograded/<student>/<assignment>/
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert run_setup_cell()["COURSE_ROOT"] == REPO_ROOT


@pytest.mark.parametrize("named", [None, "elsewhere"], ids=["no variable", "variable naming the wrong folder"])
def test_outside_the_course_the_cell_says_in_one_line_what_to_do(tmp_path: Path, monkeypatch, named):
    monkeypatch.delenv("THREE_CIRCUITS_FORCE_COLAB", raising=False)
    if named is None:
        monkeypatch.delenv("THREE_CIRCUITS_ROOT", raising=False)
    else:
        monkeypatch.setenv("THREE_CIRCUITS_ROOT", str(tmp_path / named))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as failed:
        run_setup_cell()
    message = str(failed.value)
    assert "\n" not in message and "THREE_CIRCUITS_ROOT" in message and "README.md" in message
    assert ("open the notebook from inside the course folder" in message) == (named is None)
    assert failed.value._render_traceback_() == [f"CourseNotFound: {message}"]


def _run_in_a_kernel(tmp_path: Path, sources: list[str], env: dict[str, str]) -> list[dict]:
    """Execute code cells in a real IPython kernel, in ``tmp_path``; return the error outputs."""
    import os

    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    kernel_env = {key: value for key, value in os.environ.items() if not key.startswith("THREE_CIRCUITS_")}
    client = NotebookClient(notebook, timeout=120, allow_errors=True, resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env={**kernel_env, **env})
    return [output for cell in notebook.cells for output in cell.outputs if output.output_type == "error"]


def test_in_jupyter_the_errors_show_one_line_without_traceback(tmp_path: Path):
    """What a learner sees: the setup cell outside the course, and a self-check on a stub."""
    (error,) = _run_in_a_kernel(tmp_path, [SETUP_CELL], env={})
    assert len(error.traceback) == 1 and error.traceback[0].startswith("CourseNotFound: this notebook runs in")
    stub = "def f():\n    raise NotImplementedError()\n"
    check = "from utils.selfcheck import call_learner\ncall_learner(f)"
    (error,) = _run_in_a_kernel(tmp_path, [SETUP_CELL, stub, check], env={"THREE_CIRCUITS_ROOT": str(REPO_ROOT)})
    assert error.ename == "SelfCheckFailed"
    assert error.traceback == [
        "SelfCheckFailed: f still raises NotImplementedError: replace `raise NotImplementedError()` in the cell "
        "that defines f with your code, run that cell, then run the check again."
    ]


def test_on_colab_the_cell_clones_installs_and_is_importable(tmp_path: Path, monkeypatch):
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("needs a git checkout to clone from")
    target = tmp_path / "three-circuits"
    monkeypatch.setenv("THREE_CIRCUITS_FORCE_COLAB", "1")
    monkeypatch.setenv("THREE_CIRCUITS_ROOT", str(target))
    monkeypatch.setenv("THREE_CIRCUITS_REPOSITORY", f"file://{REPO_ROOT}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    real_run = subprocess.run
    commands = []

    def recording_run(command, *args, **kwargs):
        commands.append(command)
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording_run)
    namespace = run_setup_cell()
    assert namespace["IN_COLAB"] is True and namespace["COURSE_ROOT"] == target
    assert (target / "utils" / "checkpoints.py").exists()
    assert (target / "trained_models" / "modular_addition" / "weights.pt").exists()
    assert sys.path[0] == str(target)
    assert commands[0][:2] == ["git", "clone"] and commands[1][-1].endswith("requirements-colab.txt")
    commands.clear()
    run_setup_cell()  # a second run (e.g. after a kernel restart) must not clone again
    assert all(command[0] != "git" for command in commands)


def test_colab_requirements_leave_torch_alone():
    lines = [line.split("#")[0].strip() for line in (REPO_ROOT / "requirements-colab.txt").read_text().splitlines()]
    assert not [line for line in lines if line.lower().startswith("torch")]
    # Both majors run the course (utils.transformer); each asks only torch>=2.6 of torch, which Colab has.
    assert "transformer-lens>=3.9,<5" in lines


def test_links_use_the_one_repository_address():
    assert CLONE_URL == f"https://github.com/{GITHUB_REPOSITORY}.git"
    assert colab_url("chapters/x.ipynb").endswith(f"{GITHUB_REPOSITORY}/blob/main/chapters/x.ipynb")
    assert "solutions on Colab" in badge_markdown("a_exercises.ipynb", "a_solutions.ipynb")
