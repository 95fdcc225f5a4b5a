"""Where inference runs: `device` from the job spec (auto | cpu | cuda) resolved to a plan.

The plan says which torch device an encoder uses, whether it runs under fp16 autocast, how many GPUs each
Ray actor asks for, and how many torch threads it may use on CPU. It is a pure function of the request and
the GPUs visible, so the choice is testable on a machine without GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, get_args

from edgemine.errors import ConfigError

DeviceRequest = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(DeviceRequest)


@dataclass(frozen=True)
class DevicePlan:
    device: Literal["cpu", "cuda"]
    autocast: bool  # fp16 autocast for inference (CUDA only)
    num_gpus_per_actor: float  # what each Ray actor requests
    gpus: int  # GPUs visible when the plan was made

    @property
    def precision(self) -> str:
        """Recorded in the run config: outputs of different precisions are never mixed on resume."""
        return "fp16-autocast" if self.autocast else "fp32"


def visible_gpus() -> int:
    """GPUs the job can use: the Ray cluster's if Ray is running, else this process's CUDA devices."""
    try:
        import ray

        if ray.is_initialized():
            return int(ray.cluster_resources().get("GPU", 0))
    except ImportError:  # pragma: no cover - ray is a core dependency
        pass
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(device: str = "auto", *, gpus: int | None = None, autocast: bool | None = None) -> DevicePlan:
    """Turn a device request into a plan. `gpus=None` looks them up (see `visible_gpus`).

    auto: CUDA with one GPU per actor and fp16 autocast when GPUs exist, else CPU.
    cuda: the same, but fails when there is no GPU. cpu: always CPU, fp32.
    """
    if device not in DEVICES:
        raise ConfigError(f"device={device!r} is not one of {list(DEVICES)}")
    n = visible_gpus() if gpus is None else gpus
    if n < 0:
        raise ConfigError(f"gpus={n} must be >= 0")
    if device == "cuda" and n == 0:
        raise ConfigError(
            "device='cuda' but no GPU is visible (torch.cuda.is_available() is False and the Ray cluster "
            "reports 0 GPUs); use device='cpu' or 'auto'"
        )
    if device == "cpu" or n == 0:
        return DevicePlan("cpu", autocast=False, num_gpus_per_actor=0.0, gpus=n)
    return DevicePlan("cuda", autocast=True if autocast is None else autocast, num_gpus_per_actor=1.0, gpus=n)


def cpu_threads_per_actor(*, actors: int, cpus: int | None = None) -> int:
    """Torch intra-op threads for each of `actors` CPU actors sharing `cpus` cores (at least 1)."""
    total = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, total // max(1, actors))
