"""Fractional GPUs on the session's logical GPU: four 0.25-GPU actors share it, each sees the id
Ray assigned, and the torch device inside an actor follows what Ray assigned (CPU here)."""

import os

import pytest
import ray
import torch

from sim.errors import ConfigError
from sim.runtime import workers
from sim.runtime.config import ResourceSpec
from sim.runtime.workers import actor_device, group_size

QUARTER = ResourceSpec(num_cpus=0, num_gpus=0.25)


@ray.remote
class DeviceProbe:
    def report(self) -> tuple[list, str | None, str]:
        gpu_ids = ray.get_gpu_ids()
        return gpu_ids, os.environ.get("CUDA_VISIBLE_DEVICES"), str(actor_device(0))


def test_four_quarter_gpu_actors_share_the_one_gpu(ray_session):
    assert ray.cluster_resources().get("GPU") == 1
    probes = [DeviceProbe.options(**QUARTER.ray_options()).remote() for _ in range(4)]
    reports = ray.get([probe.report.remote() for probe in probes], timeout=120)
    (gpu_id,) = reports[0][0]  # one GPU id, the same for all four
    expected_device = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert reports == [([gpu_id], str(gpu_id), expected_device)] * 4
    # All four hold their quarter at once: a fifth waits until one of them goes.
    fifth = DeviceProbe.options(**QUARTER.ray_options()).remote()
    ready, _ = ray.wait([fifth.report.remote()], timeout=2)
    assert not ready
    ray.kill(probes[0])
    assert ray.get(fifth.report.remote(), timeout=120)[0] == [gpu_id]
    for probe in [*probes[1:], fifth]:
        ray.kill(probe)


def test_the_device_is_the_gpu_ray_assigned_if_torch_can_use_it(monkeypatch):
    monkeypatch.setattr(workers.ray, "get_gpu_ids", lambda: [3])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # Ray restricts CUDA_VISIBLE_DEVICES to the assigned GPU, which torch then calls cuda:0.
    assert actor_device(1) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert actor_device(1) == torch.device("cpu")  # a GPU in Ray's books but none for torch
    monkeypatch.setattr(workers.ray, "get_gpu_ids", lambda: [])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert actor_device(1) == torch.device("cpu")  # no GPU assigned: never take one


def test_group_size_counts_gpus(ray_session):
    assert group_size(QUARTER, None, max_useful=10) == 4
    assert group_size(QUARTER, None, max_useful=3) == 3
    assert group_size(QUARTER, 4, max_useful=10) == 4
    with pytest.raises(ConfigError, match=r"5 workers .*\(at most 4\)"):
        group_size(QUARTER, 5, max_useful=10)
