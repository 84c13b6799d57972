"""A sweep job's reservation (sim.runtime.reservation): pure functions of the config, checked
by hand."""

import pytest
from omegaconf import OmegaConf

from sim.errors import CohortError
from sim.runtime.config import ClusterConfig, ResourceSpec, build_component
from sim.runtime.reservation import (
    HEAD_NODE_RESOURCE,
    Reservation,
    capacity,
    reservation_of,
    resources_of,
    why_never,
    worker_share,
)
from sim.runtime.run import compose


def cluster(**roles) -> ClusterConfig:
    return ClusterConfig(**{role: ResourceSpec(**spec) for role, spec in roles.items()})


def test_a_bundle_per_actor_that_asks_for_resources():
    config = cluster(worker={"num_cpus": 1, "num_gpus": 0.5}, server={"num_cpus": 0})
    reservation = Reservation({"worker": 2, "server": 1, "oracle": 3})  # server, oracle: 0 CPUs
    assert reservation.bundles(config) == [{"CPU": 1.0, "GPU": 0.5}] * 2
    pinned = Reservation({"server": 1}, pinned={"server": {HEAD_NODE_RESOURCE: 0.001}})
    assert pinned.bundles(config) == [{HEAD_NODE_RESOURCE: 0.001}]


def test_ray_train_workers_count_in_the_total_and_the_share():
    config = cluster(worker={"num_cpus": 2}, teacher={"num_cpus": 1})
    reservation = Reservation({"teacher": 1, "worker": 1}, trained=3)
    assert reservation.bundles(config) == [{"CPU": 1.0}, {"CPU": 2.0}]
    assert reservation.trained_resources(config) == [{"CPU": 2.0}] * 3
    assert reservation.total(config) == {"CPU": 9.0}
    assert reservation.group_sizes() == {"teacher": 1, "worker": 3}


def test_worker_share_splits_the_cluster_evenly_and_never_below_one():
    assert worker_share(16, 2) == 8
    assert worker_share(16, 3) == 5
    assert worker_share(2, 48) == 1
    assert worker_share(None, 4) == 1  # workers that ask for nothing
    assert capacity({"CPU": 7, "GPU": 2}, ResourceSpec(num_cpus=2, num_gpus=0.5)) == 3
    assert capacity({"CPU": 7}, ResourceSpec(num_cpus=0)) is None


def test_a_job_no_node_can_hold_is_named_with_the_reason():
    nodes = [{"CPU": 2.0}, {"CPU": 1.0, "GPU": 1.0}]
    assert why_never([{"CPU": 2.0}, {"CPU": 1.0, "GPU": 1.0}], [], nodes) is None
    assert "no node can hold its bundle {'CPU': 3.0}" in why_never([{"CPU": 3.0}], [], nodes)
    assert "needs {'CPU': 4.0}" in why_never([{"CPU": 2.0}] * 2, [], nodes)
    assert "GPU" in why_never([], [{"CPU": 1.0, "GPU": 1.0}] * 2, nodes)


@pytest.mark.parametrize(
    ("overrides", "bundles", "trained"),
    [
        ([], [{"CPU": 1.0}] * 2 + [{HEAD_NODE_RESOURCE: 0.001}], 0),  # 10 clients in 2 tasks
        (["protocol=centralized"], [{"CPU": 1.0}, {HEAD_NODE_RESOURCE: 0.001}], 0),
        (["algorithm=margin", "protocol.oracles=2"], [{"CPU": 1.0}] * 4, 0),  # oracles: 0 CPU
        (["algorithm=lm"], [], 1),
        (["algorithm=span_corruption", "cluster.num_workers=2"], [{"CPU": 1.0}], 2),
        (["algorithm=real_data", "protocol.generators=3"], [{"CPU": 1.0}] * 3, 0),
    ],
)
def test_each_protocol_declares_what_it_places(overrides, bundles, trained):
    cfg = compose(overrides)
    protocol = build_component("protocol", cfg.protocol)
    config = OmegaConf.to_object(cfg.cluster)
    reservation = reservation_of(protocol, config, workers=4)
    assert reservation.bundles(config) == bundles
    assert len(reservation.trained_resources(config)) == trained


def test_launcher_settings_are_checked():
    from sim.runtime.sweep import Settings

    with pytest.raises(CohortError, match="hydra.launcher.max_concurrent: must be >= 1"):
        Settings(max_concurrent=0)
    with pytest.raises(CohortError, match="hydra.launcher.max_retries"):
        Settings(max_retries=-1)


def test_resources_of_leaves_out_what_is_not_asked_for():
    assert resources_of(ResourceSpec(num_cpus=0, num_gpus=0, resources={"tpu": 0})) == {}
    assert resources_of(ResourceSpec(num_cpus=0.5, resources={"accel": 1})) == {
        "CPU": 0.5,
        "accel": 1.0,
    }
