"""Building blocks for the chapters' self-checks.

A self-check runs the learner's function on real inputs, compares the result with the course's
reference, and either prints a one-line confirmation or raises :class:`SelfCheckFailed` whose
message says what differs (shape, values, where) in words a learner can act on.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch


class SelfCheckFailed(AssertionError):
    """The learner's answer differs from the reference; the message says how.

    In Jupyter the failure shows as its message alone: IPython calls ``_render_traceback_`` instead
    of printing the traceback, which would run through the course's internals and bury the one
    line the learner needs. (nbgrader's feedback shows the same line.) Outside IPython it is an
    ordinary ``AssertionError`` with the full traceback.
    """

    def _render_traceback_(self) -> list[str]:
        lines = str(self).splitlines() or [""]
        return [f"SelfCheckFailed: {lines[0]}", *lines[1:]]


def call_learner(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the learner's function, turning a still-present stub into a clear failure."""
    name = getattr(function, "__name__", "your function")
    try:
        return function(*args, **kwargs)
    except NotImplementedError:
        raise SelfCheckFailed(
            f"{name} still raises NotImplementedError: replace `raise NotImplementedError()` in the cell "
            f"that defines {name} with your code, run that cell, then run the check again."
        ) from None


def assert_tensors_close(
    name: str,
    actual: Any,
    expected: torch.Tensor,
    *,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    hint: str = "",
) -> None:
    """Fail with a readable message unless ``actual`` is a tensor equal to ``expected`` within tolerance."""
    if not isinstance(actual, torch.Tensor):
        raise SelfCheckFailed(f"{name} should be a torch.Tensor, got {type(actual).__name__}.")
    if actual.is_complex():
        raise SelfCheckFailed(
            f"{name} is complex (dtype {actual.dtype}), the reference is real; return real values "
            f"(e.g. .real, or .abs() for magnitudes). {hint}".strip()
        )
    if tuple(actual.shape) != tuple(expected.shape):
        raise SelfCheckFailed(
            f"{name} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}. {hint}".strip()
        )
    actual_values = actual.detach().to("cpu", torch.float64)
    expected_values = expected.detach().to("cpu", torch.float64)
    if torch.isnan(actual_values).any():
        raise SelfCheckFailed(f"{name} contains NaN. {hint}".strip())
    close = torch.isclose(actual_values, expected_values, atol=atol, rtol=rtol)
    if not bool(close.all()):
        difference = (actual_values - expected_values).abs()
        worst = tuple(int(index) for index in torch.nonzero(difference == difference.max())[0])
        raise SelfCheckFailed(
            f"{name} differs from the reference in {int((~close).sum())} of {close.numel()} entries; "
            f"the largest difference is at index {worst}: yours {actual_values[worst]:.5g}, "
            f"expected {expected_values[worst]:.5g}. {hint}".strip()
        )


def assert_float_close(name: str, actual: Any, expected: float, *, atol: float = 1e-4, hint: str = "") -> None:
    """Fail with a readable message unless ``actual`` is a real number within ``atol`` of ``expected``.

    Any real number is accepted: a Python float or int, a NumPy scalar (``np.float32``), or a
    one-element tensor or array (the learner forgot ``.item()``, which is harmless here). A complex
    number, a bool or a NaN fails with a message saying so.
    """
    if isinstance(actual, torch.Tensor) and actual.numel() == 1:
        actual = actual.item()  # a complex tensor gives a Python complex, refused below
    elif isinstance(actual, np.ndarray) and actual.size == 1:
        actual = actual.item()
    if isinstance(actual, (complex, np.complexfloating)):
        raise SelfCheckFailed(f"{name} returned a complex number {actual!r}; return a real number. {hint}".strip())
    if isinstance(actual, (bool, np.bool_)) or not isinstance(actual, (int, float, np.integer, np.floating)):
        raise SelfCheckFailed(f"{name} returned {actual!r} ({type(actual).__name__}), expected a number near {expected:.4f}. {hint}".strip())
    if not abs(float(actual) - expected) <= atol:
        raise SelfCheckFailed(f"{name} returned {float(actual)!r}, expected {expected:.4f}. {hint}".strip())


def passed(name: str) -> None:
    """Tell the learner a check passed."""
    print(f"\N{HEAVY CHECK MARK} {name}: matches the reference.")
