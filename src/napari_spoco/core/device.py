"""Choose where tensors live: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import torch

__all__ = ["available_devices", "resolve_device"]


def available_devices() -> list[str]:
    """Names of the devices this machine can train on, best first.

    Examples
    --------
    >>> "cpu" in available_devices()
    True
    """
    names = [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """Return the device called ``name``, or the best available one for ``None``/``"auto"``.

    Raises
    ------
    ValueError
        If the named device does not exist on this machine.
    """
    if name is None or name == "auto":
        return torch.device(available_devices()[0])
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda:0")
    if str(device) not in available_devices():
        raise ValueError(
            f"device {str(device)!r} is not available; choose one of {available_devices()}"
        )
    return device
