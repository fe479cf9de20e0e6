"""Every self-check passes on the reference solution and fails on the generated student stub.

Each solutions notebook is executed in-process, cell by cell. At every exercise cell the student
version (from the generated ``*_exercises.ipynb``) runs first and must raise ``SelfCheckFailed``
from its self-check; then the solution runs and must pass, so the notebook can go on.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import plotly.io
import pytest
import torch

from utils import notebooks
from utils.selfcheck import SelfCheckFailed


@pytest.fixture(autouse=True)
def no_plot_rendering(monkeypatch):
    monkeypatch.setattr(plotly.io, "show", lambda *args, **kwargs: None)


@pytest.fixture(autouse=True)
def restore_grad_mode():
    """The notebooks turn autograd off for their whole kernel; here they share the test process."""
    previous = torch.is_grad_enabled()
    yield
    torch.set_grad_enabled(previous)


@pytest.mark.parametrize("path", notebooks.solutions_notebooks(), ids=lambda path: path.name)
def test_each_self_check_fails_on_the_stub_and_passes_on_the_solution(path: Path, monkeypatch):
    monkeypatch.chdir(path.parent)
    solutions = nbformat.read(path, as_version=4)
    student = nbformat.read(notebooks.exercises_path(path), as_version=4)
    namespace: dict = {"__name__": "__notebook__"}
    checked = 0
    cells = list(zip(solutions.cells, student.cells))
    for index, (cell, student_cell) in enumerate(cells):
        if cell.cell_type != "code" or notebooks.is_graded_test_cell(cell):
            continue  # a graded check cell runs with its exercise, below
        if notebooks.is_solution_cell(cell):
            following = cells[index + 1][0] if index + 1 < len(cells) else None
            check = following.source if following is not None and notebooks.is_graded_test_cell(following) else ""
            # The learner runs the stub, then the check cell after it: the check must fail and say why.
            with pytest.raises(SelfCheckFailed, match="NotImplementedError"):
                exec(compile(student_cell.source, f"{path.name}[{index}] (student)", "exec"), namespace)
                exec(compile(check, f"{path.name}[{index + 1}] (check)", "exec"), namespace)
            checked += 1
            exec(compile(cell.source, f"{path.name}[{index}]", "exec"), namespace)
            exec(compile(check, f"{path.name}[{index + 1}] (check)", "exec"), namespace)
            continue
        exec(compile(cell.source, f"{path.name}[{index}]", "exec"), namespace)
    assert checked >= 3, f"{path.name} should have at least three self-checked exercises"


def test_assert_float_close_accepts_floats_and_one_element_tensors_only():
    import torch

    from utils.selfcheck import assert_float_close

    assert_float_close("x", 0.5, 0.50001)
    assert_float_close("x", torch.tensor(0.5), 0.5)
    for wrong in (0.6, "0.5", None, torch.tensor([0.5, 0.5]), float("nan")):
        with pytest.raises(SelfCheckFailed, match="x returned"):
            assert_float_close("x", wrong, 0.5, hint="a hint")


def test_assert_float_close_accepts_any_real_number_type():
    """A correct answer returned as np.float32, a Python int or a 0-d array used to be rejected."""
    import numpy as np
    import torch

    from utils.selfcheck import assert_float_close

    for right in (np.float32(2.0), np.float64(2.0), 2, np.int64(2), np.array(2.0), torch.tensor([2.0]),
                  torch.tensor(2, dtype=torch.int32)):
        assert_float_close("x", right, 2.0)
    for wrong in (True, 2 + 0j, np.complex64(2), torch.tensor(2 + 0j), np.float32(2.5), float("inf")):
        with pytest.raises(SelfCheckFailed, match="x returned") as failed:
            assert_float_close("x", wrong, 2.0)
        assert "\n" not in str(failed.value)


def test_assert_tensors_close_refuses_a_complex_tensor():
    """A complex tensor used to pass: converting it to float silently dropped the imaginary part."""
    import torch

    from utils.selfcheck import assert_tensors_close

    expected = torch.tensor([1.0, 2.0])
    assert_tensors_close("y", expected.clone(), expected)
    with pytest.raises(SelfCheckFailed, match=r"y is complex \(dtype torch.complex64\).*\.real"):
        assert_tensors_close("y", torch.tensor([1.0 + 5j, 2.0 + 0j]), expected)
    with pytest.raises(SelfCheckFailed, match=r"y is complex"):
        assert_tensors_close("y", torch.tensor([1.0 + 0j, 2.0 + 0j]), expected)  # even with zero imaginary part
