"""Notebook hygiene: clean commits, generated student notebooks, nbgrader markup, exercise labels."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from utils import notebooks
from utils.checkpoints import REPO_ROOT
from utils.colab import SETUP_CELL

ALL_NOTEBOOKS = sorted((REPO_ROOT / "chapters").glob("*/*.ipynb"))
SOLUTIONS = notebooks.solutions_notebooks()


def _id(path: Path) -> str:
    return path.name


def test_every_chapter_has_solutions_and_generated_exercises():
    assert SOLUTIONS, "no solutions notebooks found"
    for solutions in SOLUTIONS:
        assert notebooks.exercises_path(solutions).exists(), f"{solutions.name} has no student notebook"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=_id)
def test_notebook_is_committed_without_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    dirty = [index for index, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{path.name} has outputs in cells {dirty}: run `python -m utils.notebooks` to clear them"


def test_student_notebooks_and_headers_are_in_step_with_the_solutions():
    stale = notebooks.sync(check=True)
    assert not stale, f"out of step: {[path.name for path in stale]}; run `python -m utils.notebooks`"


@pytest.mark.parametrize("path", SOLUTIONS, ids=_id)
def test_exercises_are_labelled_marked_and_stubbed(path: Path):
    solutions = nbformat.read(path, as_version=4)
    student = nbformat.read(notebooks.exercises_path(path), as_version=4)
    assert len(solutions.cells) == len(student.cells)
    exercise_cells = [i for i, cell in enumerate(solutions.cells) if notebooks.is_solution_cell(cell)]
    assert exercise_cells, f"{path.name} has no exercises"
    for index in exercise_cells:
        heading = next(cell.source for cell in reversed(solutions.cells[:index]) if cell.cell_type == "markdown")
        assert "Difficulty" in heading and "Time" in heading and "minutes" in heading, (
            f"{path.name} cell {index}: the markdown before an exercise must state its difficulty and time"
        )
        metadata = solutions.cells[index].metadata["nbgrader"]
        assert metadata == {**metadata, "solution": True, "grade": False, "locked": False, "schema_version": 3}
        stubbed = student.cells[index].source
        assert "raise NotImplementedError()" in stubbed and notebooks.BEGIN not in stubbed
        assert student.cells[index].metadata["nbgrader"] == metadata
    for index, cell in enumerate(solutions.cells):
        if index not in exercise_cells:
            assert cell.source == student.cells[index].source or cell.metadata.get(notebooks.ROLE_KEY)


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=_id)
def test_notebook_opens_with_colab_badge_and_setup_cell(path: Path):
    notebook = nbformat.read(path, as_version=4)
    relative = path.relative_to(REPO_ROOT).as_posix()
    assert f"blob/main/{relative})" in notebook.cells[0].source
    assert notebook.cells[1].source == SETUP_CELL


def test_stub_keeps_indentation_and_code_around_the_region():
    source = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n\ncheck(f)"
    assert notebooks.stub_solution_regions(source) == (
        "def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\ncheck(f)"
    )
    assert notebooks.stub_solution_regions("### BEGIN SOLUTION\nIt is 4.\n### END SOLUTION", "markdown") == "YOUR ANSWER HERE"


def _write(tmp_path: Path, cell) -> Path:
    chapter = tmp_path / "9_test"
    chapter.mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [cell]
    nbformat.write(notebook, chapter / "9.1_test_solutions.ipynb")
    return tmp_path


def test_solution_markers_without_nbgrader_metadata_are_refused(tmp_path: Path):
    chapters = _write(tmp_path, nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION"))
    with pytest.raises(notebooks.NotebookError, match="no nbgrader metadata"):
        notebooks.sync(chapters_dir=chapters)


def test_unbalanced_markers_are_refused(tmp_path: Path):
    cell = nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1")
    cell.metadata["nbgrader"] = {"solution": True, "grade": False, "locked": False, "grade_id": "x", "schema_version": 3}
    with pytest.raises(notebooks.NotebookError, match="matching"):
        notebooks.sync(chapters_dir=_write(tmp_path, cell))


def test_sync_writes_a_student_notebook_and_then_reports_nothing_stale(tmp_path: Path):
    cell = nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION")
    cell.metadata["nbgrader"] = {"solution": True, "grade": False, "locked": False, "grade_id": "f", "schema_version": 3}
    cell.outputs = [nbformat.v4.new_output("stream", text="left over")]
    chapters = _write(tmp_path, cell)
    assert len(notebooks.sync(chapters_dir=chapters)) == 2
    student = nbformat.read(chapters / "9_test" / "9.1_test_exercises.ipynb", as_version=4)
    assert "raise NotImplementedError()" in student.cells[-1].source
    assert not nbformat.read(chapters / "9_test" / "9.1_test_solutions.ipynb", as_version=4).cells[-1].outputs
    assert notebooks.sync(check=True, chapters_dir=chapters) == []
