"""Make an nbgrader course from the chapters: ``python -m utils.nbgrader_course COURSE_DIR``.

nbgrader releases a notebook under the file name it has in ``source/``. The course's source of
truth is ``*_solutions.ipynb``, but students expect ``*_exercises.ipynb``, so this command copies
each solutions notebook to ``COURSE_DIR/source/<assignment>/<name>_exercises.ipynb`` (with the
student notebook's Colab badge at the top, which links to the exercises, not the solutions). One
notebook is one assignment, named like the notebook without the suffix (``2.1_ov_svd``).

It also writes ``COURSE_DIR/nbgrader_config.py``, which

* points ``THREE_CIRCUITS_ROOT`` at this repository, so each notebook's setup cell finds the
  course's code, models and data when nbgrader runs it outside the repository;
* gives a cell up to 300 s (nbgrader's default, 30 s, is too short on 2 CPU cores).

Run nbgrader with this repository's ``.venv`` (``.venv/bin/nbgrader ...``): nbgrader runs the
notebooks in the ``python3`` kernel of the Python it runs under, which then has the course's
packages. See INSTRUCTORS.md for the whole workflow.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

from utils.checkpoints import REPO_ROOT
from utils.notebooks import (
    ROLE_KEY,
    SOLUTIONS_SUFFIX,
    NotebookError,
    exercises_path,
    is_graded_test_cell,
    is_solution_cell,
    render,
    select,
)

COURSE_ID = "three-circuits"
CELL_TIMEOUT_S = 300

CONFIG_TEMPLATE = '''# nbgrader configuration for the Three Circuits course, written by `python -m utils.nbgrader_course`.
import os

c = get_config()  # noqa: F821 - provided by nbgrader when it reads this file
c.CourseDirectory.course_id = "{course_id}"
# Each notebook's setup cell looks here for the course (code, trained models, data).
os.environ.setdefault("THREE_CIRCUITS_ROOT", {root!r})
# A few cells take tens of seconds on 2 CPU cores; nbgrader's default limit is 30 s a cell.
c.Execute.timeout = {timeout}
'''


def assignment_id(solutions: Path) -> str:
    """The nbgrader assignment for a solutions notebook: its name without the suffix (``3.1_fourier``)."""
    return solutions.name[: -len(SOLUTIONS_SUFFIX)]


def source_notebook(solutions: Path) -> str:
    """The nbgrader source for ``solutions``: the full solutions, headed by the student notebook's badge."""
    solutions_text, student_text = render(solutions)
    notebook = nbformat.reads(solutions_text, as_version=4)
    student = nbformat.reads(student_text, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.metadata.get(ROLE_KEY) == "colab-badge":
            notebook.cells[index] = student.cells[index]
    return nbformat.writes(notebook) + "\n"


_MINUTES = re.compile(r"about (\d+) minutes")


def exercise_summary(solutions: Path) -> list[tuple[str, int, int | None]]:
    """``(grade_id, points, minutes)`` for each exercise of a solutions notebook, as nbgrader grades it:
    points from the graded check cell after the exercise, minutes from the time estimate above it."""
    cells = nbformat.reads(render(solutions)[0], as_version=4).cells
    rows = []
    for index, cell in enumerate(cells):
        if not is_solution_cell(cell):
            continue
        check = cells[index + 1] if index + 1 < len(cells) else None
        points = check.metadata["nbgrader"]["points"] if check is not None and is_graded_test_cell(check) else 0
        heading = next((above.source for above in reversed(cells[:index]) if above.cell_type == "markdown"), "")
        minutes = _MINUTES.search(heading)
        rows.append((cell.metadata["nbgrader"]["grade_id"], points, int(minutes.group(1)) if minutes else None))
    return rows


def make_course(course_dir: Path, only: list[Path] | None = None, root: Path = REPO_ROOT) -> list[Path]:
    """Write ``nbgrader_config.py`` and one source assignment per solutions notebook (all, or those
    named in ``only``) into ``course_dir``; return the source notebooks written."""
    course_dir.mkdir(parents=True, exist_ok=True)
    (course_dir / "nbgrader_config.py").write_text(
        CONFIG_TEMPLATE.format(course_id=COURSE_ID, root=str(root), timeout=CELL_TIMEOUT_S)
    )
    written = []
    for solutions in select(list(only or [])):
        target = course_dir / "source" / assignment_id(solutions) / exercises_path(solutions).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source_notebook(solutions))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.nbgrader_course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--summary", action="store_true",
                        help="write nothing; list each assignment's exercises with points and minutes")
    parser.add_argument("course_dir", type=Path, nargs="?", help="the nbgrader course folder to create or update")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="chapter folders or notebooks to include (default: every chapter)")
    args = parser.parse_args(argv)
    if args.summary:
        for solutions in select(args.notebooks + ([args.course_dir] if args.course_dir else [])):
            rows = exercise_summary(solutions)
            minutes = sum(row[2] or 0 for row in rows)
            print(f"{assignment_id(solutions)}: {len(rows)} exercises, {sum(row[1] for row in rows)} points, "
                  f"about {minutes} minutes of exercises")
            for grade_id, points, row_minutes in rows:
                print(f"  {grade_id:<28} {points} points  about {row_minutes} minutes")
        return 0
    if args.course_dir is None:
        parser.error("name the course folder to write (or give --summary)")
    try:
        written = make_course(args.course_dir.resolve(), args.notebooks)
    except NotebookError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote: {path}")
    assignments = " ".join(path.parent.name for path in written)
    print(f"Next: cd {args.course_dir} && for a in {assignments}; do {REPO_ROOT}/.venv/bin/nbgrader generate_assignment $a; done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
