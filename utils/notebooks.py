"""Keep the course notebooks in step: ``python -m utils.notebooks [--check]``.

The solutions notebooks (``chapters/*/*_solutions.ipynb``) are the single source. This command

1. writes the Colab badge and the setup cell (from :mod:`utils.colab`) at the top of each one,
2. clears every output (outputs are megabytes of plotly and make diffs unreadable), and
3. splits every exercise cell whose code ends with its self-check call (``checks.check_x(...)``)
   into the solution cell and, right after it, a locked, graded nbgrader test cell holding the call
   (worth as many points as the exercise's difficulty in 🔴), so nbgrader can autograde it and the
   learner cannot edit it (see :func:`split_check_cells`; a cell split already is left alone), and
4. generates the student notebook beside it (``*_exercises.ipynb``), in which each region between
   ``### BEGIN SOLUTION`` and ``### END SOLUTION`` becomes a stub that raises
   ``NotImplementedError``.

Instructors feed the solutions notebooks to nbgrader under the student notebook's name (see
INSTRUCTORS.md and ``python -m utils.nbgrader_course``). ``--check`` changes nothing and exits with
1 when a notebook is out of step; naming notebooks or chapter folders limits the command to them.
"""

from __future__ import annotations

import argparse
import ast
import copy
import io
import re
import sys
import tokenize
from pathlib import Path
from typing import Any

import nbformat

from utils.checkpoints import REPO_ROOT
from utils.colab import SETUP_CELL, badge_markdown

CHAPTERS_DIR = REPO_ROOT / "chapters"
SOLUTIONS_SUFFIX = "_solutions.ipynb"
EXERCISES_SUFFIX = "_exercises.ipynb"
BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
ROLE_KEY = "three_circuits"  # cell metadata key marking the generated header cells
NBGRADER_SCHEMA_VERSION = 3


class NotebookError(ValueError):
    """A solutions notebook breaks the course's markup rules."""


def solutions_notebooks(chapters_dir: Path = CHAPTERS_DIR) -> list[Path]:
    """Every solutions notebook, in chapter order."""
    return sorted(chapters_dir.glob(f"*/*{SOLUTIONS_SUFFIX}"))


def exercises_path(solutions: Path) -> Path:
    """Where the student notebook generated from ``solutions`` lives."""
    return solutions.with_name(solutions.name[: -len(SOLUTIONS_SUFFIX)] + EXERCISES_SUFFIX)


def _relative(path: Path) -> str:
    resolved = path.resolve()
    return resolved.relative_to(REPO_ROOT).as_posix() if resolved.is_relative_to(REPO_ROOT) else str(resolved)


def _header_cells(notebook_path: Path, solutions_path: Path) -> list[Any]:
    badge = nbformat.v4.new_markdown_cell(badge_markdown(_relative(notebook_path), _relative(solutions_path)))
    badge.metadata[ROLE_KEY] = "colab-badge"
    setup = nbformat.v4.new_code_cell(SETUP_CELL)
    setup.metadata[ROLE_KEY] = "setup"
    return [badge, setup]


def is_solution_cell(cell: Any) -> bool:
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("solution", False))


def is_graded_test_cell(cell: Any) -> bool:
    """A locked nbgrader cell worth points that holds no solution: an exercise's self-check."""
    metadata = cell.get("metadata", {}).get("nbgrader", {})
    return bool(metadata.get("grade")) and not metadata.get("solution") and bool(metadata.get("locked"))


TEST_CELL_SUFFIX = "_check"
_DIFFICULTY = re.compile(r"Difficulty:?\*{0,2}\s*((?:\N{LARGE RED CIRCLE})+)")


def _check_call_start(source: str) -> int | None:
    """0-based line on which the cell's last statement starts, when that statement is a self-check
    call (``something.check_name(...)`` or ``check_name(...)``) that follows other code; else ``None``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    if len(tree.body) < 2:
        return None
    last = tree.body[-1]
    if not (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)):
        return None
    function = last.value.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
    return last.lineno - 1 if name.startswith("check_") else None


def exercise_points(cells: list[Any], index: int) -> int:
    """Points for the exercise in ``cells[index]``: its difficulty (the 🔴 in the markdown above it), at least 1."""
    for cell in reversed(cells[:index]):
        if cell.cell_type == "markdown":
            found = _DIFFICULTY.search(cell.source)
            return len(found.group(1)) if found else 1
    return 1


def split_check_cells(cells: list[Any]) -> list[Any]:
    """Move each exercise's self-check call into a locked, graded nbgrader test cell of its own.

    A solution cell whose last statement is a ``check_...(...)`` call becomes two cells: the
    solution (everything before the call) and a test cell with the call, metadata
    ``{"grade": true, "locked": true, "points": N, "solution": false, "task": false, "grade_id":
    "<exercise>_check"}`` where N is the exercise's difficulty. nbgrader gives the points when the
    cell runs without error, so a wrong answer (the check raises) scores 0 for that exercise.
    Deterministic and idempotent: a split cell no longer ends with a check call.
    """
    result: list[Any] = []
    for index, cell in enumerate(cells):
        start = _check_call_start(cell.source) if cell.cell_type == "code" and is_solution_cell(cell) else None
        if start is None:
            result.append(cell)
            continue
        lines = cell.source.splitlines()
        solution = copy.deepcopy(cell)
        solution.source = "\n".join(lines[:start]).rstrip()
        solution.outputs, solution.execution_count = [], None
        test = nbformat.v4.new_code_cell("\n".join(lines[start:]).strip())
        test.pop("id", None)
        test.metadata["nbgrader"] = {
            "grade": True,
            "grade_id": cell.metadata["nbgrader"]["grade_id"] + TEST_CELL_SUFFIX,
            "locked": True,
            "points": exercise_points(cells, index),
            "schema_version": NBGRADER_SCHEMA_VERSION,
            "solution": False,
            "task": False,
        }
        result += [solution, test]
    return result


_MARKER_WORDS = re.compile(r"(BEGIN|END)\s*SOLUTION", re.IGNORECASE)


def _comment_rows(source: str) -> set[int] | None:
    """1-based rows of a code cell on which a comment token starts, or ``None`` when the cell
    cannot be read as Python tokens (an unterminated string, for instance)."""
    # IPython magics and shell lines are not Python; blank them so the rows still line up.
    masked = "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )
    try:
        return {
            token.start[0]
            for token in tokenize.generate_tokens(io.StringIO(masked + "\n").readline)
            if token.type == tokenize.COMMENT and token.string.strip() in (BEGIN, END)
        }
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None


def solution_regions(source: str, cell_type: str = "code", where: str = "cell") -> list[tuple[int, int]]:
    """The solution regions of a cell as ``(begin_line, end_line)`` pairs, 0-based line indexes.

    The markup is read strictly: each ``### BEGIN SOLUTION`` / ``### END SOLUTION`` marker stands
    alone on its line (indentation aside), BEGIN and END alternate starting with BEGIN, regions
    do not nest, END is indented like its BEGIN, and in a code cell a marker is a comment, not text
    inside a string. Anything else raises :class:`NotebookError` naming the line and the fix, so
    a malformed region can never be copied into a student notebook.
    """
    lines = source.splitlines()
    comment_rows = _comment_rows(source) if cell_type == "code" else set()
    regions: list[tuple[int, int]] = []
    opened: int | None = None
    in_fence = False
    for index, line in enumerate(lines):
        stripped = line.strip()
        if cell_type != "code" and stripped.startswith("```"):
            in_fence = not in_fence
        if not _MARKER_WORDS.search(line):
            continue
        at = f"{where}, line {index + 1}"
        if stripped not in (BEGIN, END):
            raise NotebookError(
                f"{at}: malformed solution marker {stripped!r}; write exactly '{BEGIN}' or '{END}' "
                "alone on a line of its own (no code, quotes or extra '#' on that line)"
            )
        if cell_type == "code" and (comment_rows is None or index + 1 not in comment_rows):
            raise NotebookError(
                f"{at}: {stripped!r} is inside a string (or the cell is not valid Python), not a comment; "
                "put the markers on comment lines of their own, outside any string"
            )
        if cell_type != "code" and in_fence:
            raise NotebookError(
                f"{at}: {stripped!r} is inside a fenced code block; put the markers outside the ``` fence"
            )
        if stripped == BEGIN:
            if opened is not None:
                raise NotebookError(
                    f"{at}: '{BEGIN}' inside the region opened on line {opened + 1} (regions cannot nest); "
                    f"close that region with '{END}' first"
                )
            opened = index
        else:
            if opened is None:
                raise NotebookError(
                    f"{at}: '{END}' without an open region (END before BEGIN); put '{BEGIN}' above the "
                    f"solution and '{END}' below it"
                )
            indent = lines[opened][: len(lines[opened]) - len(lines[opened].lstrip())]
            if line[: len(line) - len(line.lstrip())] != indent:
                raise NotebookError(
                    f"{at}: '{END}' is indented differently from its '{BEGIN}' on line {opened + 1}; "
                    "indent both markers the same"
                )
            regions.append((opened, index))
            opened = None
    if opened is not None:
        raise NotebookError(
            f"{where}, line {opened + 1}: the region opened here has no matching '{END}'; add '{END}' on its own "
            "line after the solution"
        )
    return regions


def validate(notebook: Any, path: Path) -> None:
    """Check nbgrader markup: markers only in solution cells, well-formed regions, unique grade ids."""
    grade_ids: set[str] = set()
    for index, cell in enumerate(notebook.cells):
        if is_graded_test_cell(cell):
            metadata = cell.metadata["nbgrader"]
            where = f"{_relative(path)}, cell {index}"
            if metadata.get("grade_id") in grade_ids or not metadata.get("grade_id"):
                raise NotebookError(f"{where}: a graded cell needs a grade_id of its own, got {metadata.get('grade_id')!r}.")
            if not metadata.get("points"):
                raise NotebookError(f"{where}: a graded cell needs \"points\" above 0 in its nbgrader metadata.")
            grade_ids.add(metadata["grade_id"])
        source = cell.source
        has_markers = BEGIN in source or END in source
        where = f"{_relative(path)}, cell {index}"
        if has_markers and not is_solution_cell(cell):
            raise NotebookError(
                f"{where} has '{BEGIN}' but no nbgrader metadata; add "
                '"nbgrader": {"solution": true, "grade": false, "locked": false, "grade_id": ..., '
                '"schema_version": 3} to the cell metadata.'
            )
        if is_solution_cell(cell):
            metadata = cell.metadata["nbgrader"]
            for key in ("grade", "locked", "grade_id", "schema_version"):
                if key not in metadata:
                    raise NotebookError(f"{where}: nbgrader metadata lacks '{key}'.")
            if metadata["grade_id"] in grade_ids:
                raise NotebookError(f"{where}: grade_id {metadata['grade_id']!r} is used twice.")
            grade_ids.add(metadata["grade_id"])
            if not solution_regions(source, cell.cell_type, where):
                raise NotebookError(
                    f"{where}: a solution cell needs at least one region: a '{BEGIN}' line, the solution, "
                    f"then a '{END}' line (found none)."
                )


def stub_solution_regions(source: str, cell_type: str = "code", where: str = "cell") -> str:
    """Replace each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region with a stub.

    The regions are parsed strictly by :func:`solution_regions`; malformed markup raises
    :class:`NotebookError` instead of being copied through.
    """
    lines = source.splitlines()
    regions = solution_regions(source, cell_type, where)
    output: list[str] = []
    previous_end = -1
    for begin, end in regions:
        output += lines[previous_end + 1 : begin]
        indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
        if cell_type == "markdown":
            output.append(f"{indent}YOUR ANSWER HERE")
        else:
            output += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
        previous_end = end
    output += lines[previous_end + 1 :]
    return "\n".join(output).rstrip("\n")


def render(solutions: Path) -> tuple[str, str]:
    """The solutions notebook as it should be on disk, and the student notebook generated from it."""
    notebook = nbformat.read(solutions, as_version=4)
    validate(notebook, solutions)
    body = split_check_cells([cell for cell in notebook.cells if ROLE_KEY not in cell.get("metadata", {})])
    for cell in body:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.pop("id", None)
    notebook.cells = _header_cells(solutions, solutions) + body
    student = copy.deepcopy(notebook)
    student.cells = _header_cells(exercises_path(solutions), solutions) + copy.deepcopy(body)
    for index, cell in enumerate(student.cells):
        if is_solution_cell(cell):
            where = f"{_relative(solutions)}, cell {index}"
            cell.source = stub_solution_regions(cell.source, cell.cell_type, where)
    for book in (notebook, student):
        for number, cell in enumerate(book.cells):
            cell["id"] = f"cell-{number}"
        book.nbformat_minor = max(book.nbformat_minor, 5)
    return nbformat.writes(notebook) + "\n", nbformat.writes(student) + "\n"


def select(only: list[Path], chapters_dir: Path = CHAPTERS_DIR) -> list[Path]:
    """The solutions notebooks named by ``only`` (solutions or student notebooks, or chapter folders);
    all of them when ``only`` is empty. A path that names none raises :class:`NotebookError`."""
    everything = solutions_notebooks(chapters_dir)
    if not only:
        return everything
    chosen: list[Path] = []
    for path in only:
        path = path.resolve()
        if path.name.endswith(EXERCISES_SUFFIX):
            path = path.with_name(path.name[: -len(EXERCISES_SUFFIX)] + SOLUTIONS_SUFFIX)
        matches = [book for book in everything if book.resolve() == path or book.resolve().is_relative_to(path)]
        if not matches:
            raise NotebookError(f"{path} names no solutions notebook under {chapters_dir}; give a chapter folder or a *{SOLUTIONS_SUFFIX}")
        chosen += [book for book in matches if book not in chosen]
    return sorted(chosen)


def sync(check: bool = False, chapters_dir: Path = CHAPTERS_DIR, only: list[Path] | None = None) -> list[Path]:
    """Write (or with ``check``, only compare) every notebook, or those in ``only`` (see :func:`select`);
    return those that were out of step."""
    stale = []
    for solutions in select(list(only or []), chapters_dir):
        expected_solutions, expected_student = render(solutions)
        for path, text in ((solutions, expected_solutions), (exercises_path(solutions), expected_student)):
            current = path.read_text() if path.exists() else None
            if current != text:
                stale.append(path)
                if not check:
                    path.write_text(text)
    return stale


def main(argv: list[str] | None = None, chapters_dir: Path = CHAPTERS_DIR) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.notebooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if out of step")
    parser.add_argument("paths", nargs="*", type=Path,
                        help="chapter folders or notebooks to sync (default: every chapter)")
    args = parser.parse_args(argv)
    try:
        stale = sync(check=args.check, chapters_dir=chapters_dir, only=args.paths)
    except NotebookError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in stale:
        print(f"{'out of step' if args.check else 'wrote'}: {_relative(path)}")
    if args.check and stale:
        print("Run `python -m utils.notebooks` to regenerate them.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
