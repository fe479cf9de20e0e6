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
import re
import sys
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


def validate(notebook: Any, path: Path) -> None:
    """Check nbgrader markup: markers only in solution cells, balanced, unique grade ids."""
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
            begins, ends = source.count(BEGIN), source.count(END)
            if begins == 0 or begins != ends:
                raise NotebookError(
                    f"{where}: a solution cell needs matching '{BEGIN}' / '{END}' lines "
                    f"(found {begins} and {ends})."
                )


def stub_solution_regions(source: str, cell_type: str = "code") -> str:
    """Replace each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region with a stub."""
    pattern = re.compile(
        rf"^(?P<indent>[ \t]*){re.escape(BEGIN)}[^\n]*\n.*?^[ \t]*{re.escape(END)}[^\n]*(\n|$)",
        re.DOTALL | re.MULTILINE,
    )

    def stub(match: re.Match[str]) -> str:
        indent = match.group("indent")
        if cell_type == "markdown":
            return f"{indent}YOUR ANSWER HERE\n"
        return f"{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError()\n"

    return pattern.sub(stub, source).rstrip("\n")


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
    for cell in student.cells:
        if is_solution_cell(cell):
            cell.source = stub_solution_regions(cell.source, cell.cell_type)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.notebooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if out of step")
    args = parser.parse_args(argv)
    try:
        stale = sync(check=args.check)
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
