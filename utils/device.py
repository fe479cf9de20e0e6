"""Where the course's tensors live: CUDA when a GPU is present, otherwise the CPU."""

from __future__ import annotations

import torch


def get_device() -> torch.device:
    """Return ``cuda`` when a GPU is available, else ``cpu``.

    Every loader and training command in the course calls this, so the same code runs on a
    laptop, a free Colab CPU runtime and a GPU machine.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
