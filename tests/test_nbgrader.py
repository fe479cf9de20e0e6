"""nbgrader end to end, for every chapter, as an instructor runs it (INSTRUCTORS.md).

``python -m utils.nbgrader_course`` writes the course; real nbgrader then runs
``generate_assignment``, takes two submissions (the released notebook with its stubs, and the full
solutions) and runs ``autograde`` on both in a fresh kernel outside the repository. The solutions
must get every point, the stubs none. Slow (each notebook runs twice): ``-m "not slow"`` skips it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from utils import notebooks
from utils.nbgrader_course import make_course

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("nbgrader") is None,
        reason="nbgrader is not installed in this Python; the README's setup command installs it from "
        "requirements.txt (or: pip install 'nbgrader>=0.9,<0.10')",
    ),
]


def nbgrader(course: Path, *arguments: str) -> None:
    """Run the nbgrader command line in ``course`` with this Python, whose kernel has the course's packages."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("THREE_CIRCUITS_")}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    done = subprocess.run([sys.executable, "-m", "nbgrader", *arguments], cwd=course, env=environment,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"nbgrader {' '.join(arguments)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("solutions", notebooks.solutions_notebooks(), ids=lambda path: path.name)
def test_solutions_get_full_marks_and_stubs_get_none(solutions: Path, tmp_path: Path):
    from nbgrader.api import Gradebook

    course = tmp_path / "course"
    (source,) = make_course(course, [solutions])
    assignment = source.parent.name
    assert source.name.endswith(notebooks.EXERCISES_SUFFIX), "students receive the *_exercises.ipynb name"

    nbgrader(course, "generate_assignment", assignment, "--force")
    released = course / "release" / assignment / source.name
    # (test_notebooks.py checks that the committed *_exercises.ipynb is this generated notebook.)
    expected = nbformat.reads(notebooks.render(solutions)[1], as_version=4)
    release = nbformat.read(released, as_version=4)
    assert [cell.source for cell in release.cells] == [cell.source for cell in expected.cells], (
        "nbgrader's release should be the student notebook that `python -m utils.notebooks` generates"
    )

    for student, notebook in (("stubs", released), ("solutions", source)):
        target = course / "submitted" / student / assignment / source.name
        target.parent.mkdir(parents=True)
        shutil.copy(notebook, target)
    nbgrader(course, "autograde", assignment, "--force")

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        scores = {student: gradebook.find_submission(assignment, student) for student in ("stubs", "solutions")}
        solved, stubbed = scores["solutions"], scores["stubs"]
        maximum = solved.max_score
        print(f"{assignment}: solutions {solved.score:g}/{maximum:g}, stubs {stubbed.score:g}/{maximum:g}")
        exercises = sum(notebooks.is_solution_cell(cell) for cell in expected.cells)
        assert maximum >= exercises >= 3
        assert solved.score == maximum
        assert stubbed.score == 0 < maximum

    # A stub's failing check reads as one line in the student's feedback, not a traceback.
    graded = nbformat.read(course / "autograded" / "stubs" / assignment / source.name, as_version=4)
    errors = [output for cell in graded.cells if notebooks.is_graded_test_cell(cell)
              for output in cell.outputs if output.output_type == "error"]
    assert len(errors) == exercises
    # (A later check can fail otherwise, e.g. NameError, when it needs what an earlier stub should have made.)
    failed_checks = [error.traceback for error in errors if error.ename == "SelfCheckFailed"]
    assert errors[0].ename == "SelfCheckFailed" and all(len(traceback) == 1 for traceback in failed_checks), failed_checks
