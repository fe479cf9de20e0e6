"""Notebook hygiene: clean commits, generated student notebooks, nbgrader markup, exercise labels."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@pytest.mark.parametrize("path", SOLUTIONS, ids=_id)
def test_student_notebooks_and_headers_are_in_step_with_the_solutions(path: Path):
    stale = notebooks.sync(check=True, only=[path])
    assert not stale, (
        f"out of step: {[stale_path.name for stale_path in stale]}; run "
        f"`python -m utils.notebooks {path.parent.relative_to(REPO_ROOT)}`"
    )


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
        # The self-check is the autograder's test: a locked, graded cell of its own right after the solution.
        test = solutions.cells[index + 1]
        assert notebooks.is_graded_test_cell(test), (
            f"{path.name} cell {index}: the exercise's self-check must follow in a locked, graded nbgrader cell; "
            f"run `python -m utils.notebooks {path.parent.relative_to(REPO_ROOT)}` to split it off"
        )
        assert test.metadata["nbgrader"] == {
            "grade": True, "grade_id": metadata["grade_id"] + "_check", "locked": True,
            "points": test.metadata["nbgrader"]["points"], "schema_version": 3, "solution": False, "task": False,
        }
        assert test.metadata["nbgrader"]["points"] >= 1 and ".check_" in test.source
        assert "check_" not in solutions.cells[index].source.splitlines()[-1]
        assert student.cells[index + 1] == test
    for index, cell in enumerate(solutions.cells):
        if index not in exercise_cells:
            assert cell.source == student.cells[index].source or cell.metadata.get(notebooks.ROLE_KEY)


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=_id)
def test_notebook_opens_with_colab_badge_and_setup_cell(path: Path):
    notebook = nbformat.read(path, as_version=4)
    relative = path.relative_to(REPO_ROOT).as_posix()
    assert f"blob/main/{relative})" in notebook.cells[0].source
    assert notebook.cells[1].source == SETUP_CELL


def _exercise(source: str, grade_id: str = "f"):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"solution": True, "grade": False, "locked": False, "grade_id": grade_id, "schema_version": 3}
    return cell


def test_split_moves_the_check_call_into_a_locked_graded_cell_worth_the_difficulty():
    heading = nbformat.v4.new_markdown_cell("### Exercise\n> **Difficulty:** 🔴🔴🔴⚪⚪ · **Time:** about 5 minutes")
    source = ("def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n\n\n"
              "data = [1, 2]\nchecks.check_f(\n    f, data,\n)")
    cells = notebooks.split_check_cells([heading, _exercise(source)])
    assert [cell.source for cell in cells[1:]] == [
        "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n\n\ndata = [1, 2]",
        "checks.check_f(\n    f, data,\n)",
    ]
    assert cells[2].metadata["nbgrader"] == {"grade": True, "grade_id": "f_check", "locked": True, "points": 3,
                                             "schema_version": 3, "solution": False, "task": False}
    assert cells[1].metadata["nbgrader"]["solution"] is True
    again = notebooks.split_check_cells(cells)
    assert [cell.source for cell in again] == [cell.source for cell in cells], "splitting twice changes nothing"


def test_split_leaves_cells_without_a_final_check_call_alone():
    for source in ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION",  # no check at all
                   "### BEGIN SOLUTION\nx = 1\n### END SOLUTION\ncheck_f(x)\nprint(x)",  # check not last
                   "### BEGIN SOLUTION\nx = 1\n### END SOLUTION\nchecks.report(x)"):  # not a check_ call
        cells = notebooks.split_check_cells([_exercise(source)])
        assert len(cells) == 1 and cells[0].source == source
    plain = nbformat.v4.new_code_cell("x = 1\nchecks.check_f(x)")  # not an exercise cell
    assert len(notebooks.split_check_cells([plain])) == 1


def test_sync_can_be_limited_to_named_chapters(tmp_path: Path):
    chapters = _write(tmp_path, _exercise("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\nchecks.check_x(x)"))
    other = chapters / "8_other"
    other.mkdir()
    nbformat.write(nbformat.v4.new_notebook(), other / "8.1_other_solutions.ipynb")
    written = notebooks.sync(chapters_dir=chapters, only=[chapters / "9_test"])
    assert {path.name for path in written} == {"9.1_test_solutions.ipynb", "9.1_test_exercises.ipynb"}
    assert not (other / "8.1_other_exercises.ipynb").exists()
    solutions = nbformat.read(chapters / "9_test" / "9.1_test_solutions.ipynb", as_version=4)
    assert notebooks.is_graded_test_cell(solutions.cells[-1]) and solutions.cells[-1].source == "checks.check_x(x)"
    with pytest.raises(notebooks.NotebookError, match="names no solutions notebook"):
        notebooks.sync(chapters_dir=chapters, only=[tmp_path / "nowhere"])


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


# --------------------------------------------------------------------------------------------
# The strict parser: a malformed region is refused, and no solution line reaches a student


SECRET = "secret_answer = 42  # the solution"
_NBGRADER = {"solution": True, "grade": False, "locked": False, "grade_id": "g", "schema_version": 3}

MALFORMED = {
    "marker after code on its line": f"def f():\n    y = 1  {notebooks.BEGIN}\n    {SECRET}\n    {notebooks.END}",
    "end marker after code on its line": f"def f():\n    {notebooks.BEGIN}\n    {SECRET}  {notebooks.END}\n    return 1",
    "END before BEGIN": f"{notebooks.END}\n{SECRET}\n{notebooks.BEGIN}",
    "nested regions": f"{notebooks.BEGIN}\n{SECRET}\n{notebooks.BEGIN}\n{SECRET}\n{notebooks.END}\n{SECRET}\n{notebooks.END}",
    "markers inside a triple-quoted string": f'text = """\n{notebooks.BEGIN}\n{SECRET}\n{notebooks.END}\n"""',
    "markers inside single-line strings": f'a = "{notebooks.BEGIN}"\n{SECRET}\nb = "{notebooks.END}"',
    "four hashes": f"#{notebooks.BEGIN}\n{SECRET}\n#{notebooks.END}",
    "lower case": f"### begin solution\n{SECRET}\n### end solution",
    "no space after hashes": f"###BEGIN SOLUTION\n{SECRET}\n###END SOLUTION",
    "unclosed region": f"{notebooks.BEGIN}\n{SECRET}",
    "END indented unlike its BEGIN": f"def f():\n    {notebooks.BEGIN}\n    {SECRET}\n{notebooks.END}",
    "balanced but second region inverted": (
        f"{notebooks.BEGIN}\nx = 1\n{notebooks.END}\n{notebooks.END}\n{SECRET}\n{notebooks.BEGIN}"
    ),
}


@pytest.mark.parametrize("source", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_regions_are_refused_and_never_reach_the_student(tmp_path: Path, source: str):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = dict(_NBGRADER)
    chapters = _write(tmp_path, cell)
    with pytest.raises(notebooks.NotebookError) as refused:
        notebooks.sync(chapters_dir=chapters)
    message = str(refused.value)
    assert "\n" not in message and "cell 0" in message and "line" in message
    student = chapters / "9_test" / "9.1_test_exercises.ipynb"
    assert not student.exists() or SECRET not in student.read_text()
    with pytest.raises(notebooks.NotebookError):
        notebooks.stub_solution_regions(source)


def test_check_reports_a_malformed_notebook_instead_of_in_step(tmp_path: Path, capsys):
    cell = nbformat.v4.new_code_cell(MALFORMED["marker after code on its line"])
    cell.metadata["nbgrader"] = dict(_NBGRADER)
    chapters = _write(tmp_path, cell)
    assert notebooks.main(["--check"], chapters_dir=chapters) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "malformed solution marker" in error and "alone on a line" in error


def test_markdown_regions_inside_a_code_fence_are_refused():
    source = f"```\n{notebooks.BEGIN}\n{SECRET}\n{notebooks.END}\n```"
    with pytest.raises(notebooks.NotebookError, match="fenced code block"):
        notebooks.stub_solution_regions(source, "markdown")


def test_several_regions_and_magics_are_stubbed():
    source = (f"%matplotlib inline\ndef f():\n    {notebooks.BEGIN}\n    {SECRET}\n    {notebooks.END}\n"
              f"\ndef g():\n    {notebooks.BEGIN}\n    return 2\n    {notebooks.END}\n")
    stubbed = notebooks.stub_solution_regions(source)
    assert SECRET not in stubbed and "return 2" not in stubbed
    assert stubbed.count("raise NotImplementedError()") == 2 and stubbed.startswith("%matplotlib inline\ndef f():")


# Property: for any mix of markers and lines, the parser either refuses the cell or stubs exactly
# the regions of the reference reading (alternating BEGIN / END at the left margin), and no line
# inside a region survives.

_PIECES = st.sampled_from([
    "BEGIN", "END", "code", "secret", f"x = 1  {notebooks.BEGIN}", f"#{notebooks.END}",
    f'"{notebooks.BEGIN}"', '"""', "# a comment",
])


@settings(max_examples=500, deadline=None)
@given(st.lists(_PIECES, max_size=12))
def test_parser_matches_the_reference_reading_or_refuses(pieces: list[str]):
    lines, secret_count = [], 0
    for piece in pieces:
        if piece == "BEGIN":
            lines.append(notebooks.BEGIN)
        elif piece == "END":
            lines.append(notebooks.END)
        elif piece == "code":
            lines.append("y = 0")
        elif piece == "secret":
            secret_count += 1
            lines.append(f"secret_{secret_count} = {secret_count}")
        else:
            lines.append(piece)
    source = "\n".join(lines)
    markers = [line for line in lines if line in (notebooks.BEGIN, notebooks.END)]
    quotes_before = [lines[:row].count('"""') for row, line in enumerate(lines)]
    well_formed = bool(
        markers
        and all(marker == (notebooks.BEGIN if i % 2 == 0 else notebooks.END) for i, marker in enumerate(markers))
        and len(markers) % 2 == 0
        and not any(notebooks._MARKER_WORDS.search(line) and line not in markers for line in lines)
        and lines.count('"""') % 2 == 0  # an unterminated string makes the cell unreadable
        and all(quotes_before[row] % 2 == 0 for row, line in enumerate(lines) if line in markers)
    )
    try:
        stubbed = notebooks.stub_solution_regions(source)
    except notebooks.NotebookError as error:
        assert not well_formed, f"refused a well-formed cell: {error}"
        assert "\n" not in str(error)
        return
    assert markers or not any(notebooks._MARKER_WORDS.search(line) for line in lines)
    if not markers:
        return
    assert well_formed, f"accepted a malformed cell:\n{source}"
    expected, inside = [], False
    for line in lines:
        if line == notebooks.BEGIN:
            inside = True
            expected += ["# YOUR CODE HERE", "raise NotImplementedError()"]
        elif line == notebooks.END:
            inside = False
        elif not inside:
            expected.append(line)
    assert stubbed == "\n".join(expected).rstrip("\n")
    for line in lines:
        if line.startswith("secret_") and line not in expected:
            assert line not in stubbed
