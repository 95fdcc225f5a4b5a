"""Device selection: chosen by config, CPU here, CUDA refused clearly when there is no GPU."""

from __future__ import annotations

import pytest

from edgemine.embeddings.device import cpu_threads_per_actor, resolve_device, visible_gpus
from edgemine.errors import ConfigError


def test_auto_picks_cpu_on_this_machine() -> None:
    assert visible_gpus() == 0
    plan = resolve_device("auto")
    assert plan.device == "cpu" and not plan.autocast and plan.num_gpus_per_actor == 0 and plan.precision == "fp32"


def test_auto_and_cuda_pick_the_gpu_path_when_gpus_exist() -> None:
    for request in ("auto", "cuda"):
        plan = resolve_device(request, gpus=4)
        assert plan.device == "cuda" and plan.autocast and plan.num_gpus_per_actor == 1.0
        assert plan.precision == "fp16-autocast"
    assert not resolve_device("cuda", gpus=1, autocast=False).autocast


def test_cpu_is_cpu_even_with_gpus() -> None:
    assert resolve_device("cpu", gpus=8).device == "cpu"


def test_cuda_without_gpu_fails_naming_the_fix() -> None:
    with pytest.raises(ConfigError, match="device='cuda' but no GPU is visible.*use device='cpu' or 'auto'"):
        resolve_device("cuda")


def test_unknown_device_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"device='tpu' is not one of \['auto', 'cpu', 'cuda'\]"):
        resolve_device("tpu")


def test_cuda_encoder_load_fails_clearly_here() -> None:
    from edgemine.embeddings.encoders import load_encoder

    with pytest.raises(ConfigError, match="no GPU is visible"):
        load_encoder("builtin", device="cuda")


def test_threads_split_cores_between_actors() -> None:
    assert cpu_threads_per_actor(actors=1, cpus=8) == 8
    assert cpu_threads_per_actor(actors=3, cpus=8) == 2
    assert cpu_threads_per_actor(actors=4, cpus=2) == 1


def test_actor_layout_follows_the_device_plan() -> None:
    from edgemine.embeddings.workers import plan_actors

    gpu = plan_actors(resolve_device("auto", gpus=4), cpus=32)
    assert (gpu.actors, gpu.num_gpus, gpu.threads) == (4, 1.0, 8)
    cpu = plan_actors(resolve_device("auto"), cpus=2)  # this machine: single-threaded actors, one per core + 1
    assert (cpu.actors, cpu.num_gpus, cpu.threads) == (3, 0.0, 1)
    assert plan_actors(resolve_device("auto"), cpus=2, work_blocks=1).actors == 1  # no idle actors for tiny runs
    assert plan_actors(resolve_device("cpu"), cpus=2, actors=3, work_blocks=1).actors == 3  # explicit wins
    assert cpu.actors * cpu.actor_cpus <= 2 - 0.5  # room left for the read tasks
    one = plan_actors(resolve_device("cpu"), cpus=8, actors=2)
    assert (one.actors, one.threads) == (2, 4)
    tasks = plan_actors(resolve_device("cpu"), cpus=2, decode="tasks")
    assert tasks.actors * tasks.actor_cpus <= 1.0
