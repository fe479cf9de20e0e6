"""Keep the course notebooks in step: ``python -m utils.notebooks [--check]``.

The solutions notebooks (``chapters/*/*_solutions.ipynb``) are the single source. This command

1. writes the Colab badge and the setup cell (from :mod:`utils.colab`) at the top of each one,
2. clears every output (outputs are megabytes of plotly and make diffs unreadable), and
3. generates the student notebook beside it (``*_exercises.ipynb``), in which each region between
   ``### BEGIN SOLUTION`` and ``### END SOLUTION`` becomes a stub that raises
   ``NotImplementedError``.

Solution cells carry nbgrader's cell metadata, so instructors can also feed the solutions notebooks
to nbgrader. ``--check`` changes nothing and exits with 1 when a notebook is out of step.
"""

from __future__ import annotations

import argparse
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
    body = [cell for cell in notebook.cells if ROLE_KEY not in cell.get("metadata", {})]
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


def sync(check: bool = False, chapters_dir: Path = CHAPTERS_DIR) -> list[Path]:
    """Write (or with ``check``, only compare) every notebook; return those that were out of step."""
    stale = []
    for solutions in solutions_notebooks(chapters_dir):
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
    args = parser.parse_args(argv)
    try:
        stale = sync(check=args.check, chapters_dir=chapters_dir)
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
