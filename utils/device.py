"""Where the course's tensors live: CUDA when a GPU is present, otherwise the CPU."""

from __future__ import annotations

import torch


def get_device() -> torch.device:
    """Return ``cuda`` when a GPU is available, else ``cpu``.

    Every loader and training command in the course calls this, so the same code runs on a
    laptop, a free Colab CPU runtime and a GPU machine.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device a caller asked for, checked before any work: ``None`` means :func:`get_device`.

    Raises ``ValueError`` with a one-line fix for a name torch does not know (``"banana"``), a
    device this machine lacks (``"cuda"`` without a GPU, ``"mps"`` off Apple silicon, ``"cuda:3"``
    on a one-GPU machine) and ``"meta"``, which holds shapes but no values (a model moved there
    has no weights left).
    """
    if device is None:
        return get_device()
    if isinstance(device, torch.device):
        parsed = device
    elif isinstance(device, str):
        try:
            parsed = torch.device(device.strip())
        except (RuntimeError, ValueError):
            raise ValueError(
                f"unknown device {device!r}; use 'cpu' or 'cuda' (or leave it out: CUDA when present, else CPU)"
            ) from None
    else:
        raise ValueError(
            f"device must be a string such as 'cpu' or 'cuda' or a torch.device, got {type(device).__name__}"
        )
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(parsed)!r} was asked for but this machine has no usable CUDA GPU; use 'cpu' "
                "(or leave the device out to pick CUDA only when present)"
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(parsed)!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}; use one of those or 'cuda'"
            )
        return parsed
    if parsed.type == "meta":
        raise ValueError(
            "device 'meta' holds tensor shapes but no values, so a model there has no weights; use 'cpu' or 'cuda'"
        )
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("device 'mps' (Apple silicon GPU) is not available on this machine; use 'cpu'")
        return parsed
    raise ValueError(f"device {str(parsed)!r} is not supported by the course; use 'cpu' or 'cuda'")
