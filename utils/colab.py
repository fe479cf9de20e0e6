"""The Colab links and the setup cell that open every notebook.

The repository's address is set here, once. ``python -m utils.notebooks`` writes the badge and
the setup cell into every notebook from this module, and a test fails when a notebook is out of
step. The setup cell does nothing on a local machine but find the course folder (the environment
variable ``THREE_CIRCUITS_ROOT`` when set, else the notebook's folder or one above it; when neither
is the course it stops with one line saying what to do); on Colab it clones the repository and
installs ``requirements-colab.txt`` (Colab brings its own torch).
"""

from __future__ import annotations

#: ``owner/name`` of the course repository on GitHub.
GITHUB_REPOSITORY = "three-circuits/three-circuits"
BRANCH = "main"
CLONE_URL = f"https://github.com/{GITHUB_REPOSITORY}.git"
COLAB_FOLDER = "/content/three-circuits"


def colab_url(notebook_path: str) -> str:
    """Link that opens ``notebook_path`` (relative to the repository root) in Colab."""
    return f"https://colab.research.google.com/github/{GITHUB_REPOSITORY}/blob/{BRANCH}/{notebook_path}"


def badge_markdown(notebook_path: str, solutions_path: str | None = None) -> str:
    """Markdown for the cell at the top of a notebook: links to it (and its solutions) on Colab."""
    badge = "https://colab.research.google.com/assets/colab-badge.svg"
    text = f"[![Open in Colab]({badge})]({colab_url(notebook_path)})"
    if solutions_path is not None and solutions_path != notebook_path:
        text += f" &nbsp; [solutions on Colab]({colab_url(solutions_path)})"
    return text + (
        "\n\nRunning locally? Follow the README; the setup cell below then does nothing but find the "
        "course folder. On Colab it downloads the course and installs what it needs (about a minute)."
    )


SETUP_CELL = f'''# Setup: generated from utils/colab.py by `python -m utils.notebooks`; edit it there, not here.
import os
import subprocess
import sys
from pathlib import Path

IN_COLAB = "google.colab" in sys.modules or os.environ.get("THREE_CIRCUITS_FORCE_COLAB") == "1"
if IN_COLAB:
    COURSE_ROOT = Path(os.environ.get("THREE_CIRCUITS_ROOT", "{COLAB_FOLDER}"))
    if not (COURSE_ROOT / "utils").exists():
        repository = os.environ.get("THREE_CIRCUITS_REPOSITORY", "{CLONE_URL}")
        subprocess.run(["git", "clone", "--quiet", "--depth=1", "--branch", "{BRANCH}", repository, str(COURSE_ROOT)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-r", str(COURSE_ROOT / "requirements-colab.txt")], check=True)
else:
    class CourseNotFound(FileNotFoundError):
        def _render_traceback_(self):  # IPython shows just this line, no traceback
            return [f"CourseNotFound: {{self}}"]

    named = os.environ.get("THREE_CIRCUITS_ROOT")
    folders = [Path(named).expanduser()] if named else [Path.cwd(), *Path.cwd().parents]
    COURSE_ROOT = next((folder.resolve() for folder in folders if (folder / "utils" / "colab.py").exists()), None)
    if COURSE_ROOT is None and named:
        raise CourseNotFound(f"THREE_CIRCUITS_ROOT is {{named}}, which is not the course folder (it has no utils/colab.py); set it to the folder that holds README.md and utils/ (e.g. `%env THREE_CIRCUITS_ROOT=/path/to/three-circuits` in a cell above) and run this cell again.")
    if COURSE_ROOT is None:
        raise CourseNotFound(f"this notebook runs in {{Path.cwd()}}, outside the course folder; set the environment variable THREE_CIRCUITS_ROOT to the course folder (the one with README.md and utils/) before starting Jupyter (or run `%env THREE_CIRCUITS_ROOT=/path/to/three-circuits` in a cell above), or open the notebook from inside the course folder.")
if str(COURSE_ROOT) not in sys.path:
    sys.path.insert(0, str(COURSE_ROOT))'''
