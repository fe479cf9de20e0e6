"""The README stays true: its two commands are the ones CI runs, and its links point at real files."""

from __future__ import annotations

import re

from utils.checkpoints import REPO_ROOT, TRAINED_MODELS_DIR
from utils.colab import GITHUB_REPOSITORY
from utils.notebooks import solutions_notebooks

README = (REPO_ROOT / "README.md").read_text()


def test_readme_has_the_setup_and_test_commands_that_ci_reads():
    setup = [line for line in README.splitlines() if line.startswith("python3 -m venv .venv")]
    tests = [line for line in README.splitlines() if line.startswith(".venv/bin/python -m pytest")]
    assert len(setup) == 1 and len(tests) == 1
    assert "torch==2.13.0" in setup[0] and "-r requirements.txt" in setup[0] and "jupyter lab" in setup[0]
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "grep -m1 '^python3 -m venv .venv' README.md" in ci and "pip install --quiet torch==2.13.0" in ci


def test_ci_runs_the_tests_on_both_transformer_lens_majors():
    """After the README's commands (which resolve to the newest TransformerLens the requirements
    allow), CI makes a second environment with the other major and runs the unit tests and
    notebooks there; requirements allow both majors, and the README says so."""
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    second = ci[ci.index('eval "$test_command"'):]
    assert "python3 -m venv .venv-other-tl" in second and ".venv-other-tl/bin/pip install --quiet torch==2.13.0" in second
    assert "other='transformer-lens>=4,<5'; else other='transformer-lens>=3.9,<4'" in second
    assert '.venv-other-tl/bin/pip install --quiet -r requirements.txt "$other"' in second
    assert '.venv-other-tl/bin/python -m pytest -m "not slow"' in second
    assert "CI must test 3.9 and 4.x" in second  # and it fails when both environments got the same major
    colab = [line.split("#")[0].strip() for line in (REPO_ROOT / "requirements-colab.txt").read_text().splitlines()]
    assert "transformer-lens>=3.9,<5" in colab
    assert "TransformerLens 3.9 and 4.x" in README and "CI tests both" in README


def test_every_linked_file_exists():
    colab_prefix = f"https://colab.research.google.com/github/{GITHUB_REPOSITORY}/blob/main/"
    links = re.findall(r"\]\(([^)]+)\)", README)
    local = [link for link in links if not link.startswith("http")]
    on_colab = [link[len(colab_prefix):] for link in links if link.startswith(colab_prefix)]
    assert local and on_colab
    for path in local + on_colab:
        assert (REPO_ROOT / path).exists(), f"README links to {path}, which does not exist"


def test_every_chapter_and_shipped_model_is_in_the_readme():
    for notebook in solutions_notebooks():
        assert notebook.relative_to(REPO_ROOT).as_posix() in README, f"{notebook.name} is missing from the README"
    for folder in sorted(TRAINED_MODELS_DIR.iterdir()):
        if folder.is_dir():
            assert f'load_model("{folder.name}")' in README, f"trained_models/{folder.name} is missing from the README"
