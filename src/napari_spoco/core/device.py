"""Choose where tensors live: CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import functools
import time

import torch

__all__ = ["available_devices", "bfloat16_is_faster_on_cpu", "resolve_device"]


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
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's message for "foo" is a long list of device types
        raise ValueError(
            f"unknown device {str(name)!r}; choose one of {available_devices()}"
        ) from None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda:0")
    if str(device) not in available_devices():
        raise ValueError(
            f"device {str(device)!r} is not available; choose one of {available_devices()}"
        )
    return device


@functools.cache
def bfloat16_is_faster_on_cpu() -> bool:
    """Whether bfloat16 convolutions clearly beat float32 on this CPU.

    CPUs with bfloat16 units (AVX512-BF16, AMX, recent Arm cores) run them
    about 1.6x faster; others emulate them and are slower. Measured once per
    process (tens of milliseconds) because torch reports the CPU's bfloat16
    support only through private functions.
    """
    conv = torch.nn.Conv2d(32, 32, 3, padding=1)
    batch = torch.randn(4, 32, 64, 64)

    def fastest(bfloat16: bool) -> float:
        times = []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            for _ in range(4):  # the first call of each kind sets oneDNN up: not counted
                start = time.perf_counter()
                conv(batch)
                times.append(time.perf_counter() - start)
        return min(times[1:])

    return fastest(True) < 0.8 * fastest(False)
