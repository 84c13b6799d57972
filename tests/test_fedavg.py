"""FedAvg's math against a round computed by hand, and the task/aggregation mechanics."""

import numpy as np
import pytest
import torch
from torch import nn

from algorithms.federated.fedavg import FedAvg
from sim.interfaces.federated import ClientUpdate, FederatedData
from sim.protocols.federated.actors import run_task
from sim.protocols.federated.server import gather
from sim.training.model import ClientModel


def tiny_population() -> FederatedData:
    # Client 0: x=(1,0) label 0, x=(0,1) label 1.  Client 1: x=(1,1) label 1.
    x = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    y = np.array([0, 1, 1], np.int64)
    return FederatedData(
        x=x, y=y, order=np.arange(3), offsets=np.array([0, 2, 3]), test_x=x, test_y=y, num_classes=2
    )


def linear_model() -> ClientModel:
    return ClientModel(nn.Sequential(nn.Flatten(), nn.Linear(2, 2)))


def test_one_round_matches_hand_computation():
    # One full-batch SGD step (lr 0.5) from zero parameters; softmax is (1/2, 1/2) everywhere.
    # Client 0: dL/dW = [[-1/4, 1/4], [1/4, -1/4]], dL/db = 0   -> delta0 = 0.5 * grad.
    # Client 1: dL/dW = [[1/2, 1/2], [-1/2, -1/2]], dL/db = [1/2, -1/2].
    # Weighted by sizes (2, 1): mean delta = [0, 1/2, 0, -1/2, 1/4, -1/4] / 3
    # (flat layout: W row-major, then b).
    algorithm = FedAvg(client_lr=0.5, batch_size=8)
    params = np.zeros(6, np.float32)
    result, metrics = run_task(
        algorithm,
        linear_model(),
        tiny_population(),
        params,
        np.array([0, 1]),
        seed=0,
        round_index=1,
    )
    updates = gather([result], 6, 2)
    mean_delta = updates.mean()
    assert (updates.weight, updates.count) == (3.0, 2)
    np.testing.assert_allclose(mean_delta, np.array([0, 0.5, 0, -0.5, 0.25, -0.25]) / 3, atol=1e-7)

    state = algorithm.server_update(algorithm.server_init(params), mean_delta.astype(np.float32), 1)
    np.testing.assert_allclose(state.params, [0, -1 / 6, 0, 1 / 6, -1 / 12, 1 / 12], atol=1e-7)
    assert [m["client"] for m in metrics] == [0, 1]
    assert metrics[0]["train_loss"] == pytest.approx(np.log(2))


def test_task_split_does_not_change_the_aggregate():
    algorithm = FedAvg(client_lr=0.3, batch_size=1, local_epochs=3)
    data, params = tiny_population(), np.full(6, 0.1, np.float32)
    together, _ = run_task(algorithm, linear_model(), data, params, np.array([0, 1]), 5, 2)
    apart = [
        run_task(algorithm, linear_model(), data, params, np.array([c]), 5, 2)[0] for c in (0, 1)
    ]
    np.testing.assert_allclose(
        gather([together], 6, 2).mean(), gather(apart, 6, 2).mean(), rtol=1e-12
    )


class PoisonClientZero(FedAvg):
    def client_update(self, model, params, data, rng, round_index):
        update = super().client_update(model, params, data, rng, round_index)
        if len(data) == 2:  # client 0
            update.delta[0] = np.nan
        return update


def test_non_finite_update_is_dropped_and_counted():
    result, metrics = run_task(
        PoisonClientZero(client_lr=0.5, batch_size=8),
        linear_model(),
        tiny_population(),
        np.zeros(6, np.float32),
        np.array([0, 1]),
        0,
        1,
    )
    assert [m["dropped"] for m in metrics] == [True, False]
    assert result.weight == 1.0
    assert np.isfinite(result.weighted_sum).all()


def test_all_dropped_gives_no_update():
    assert gather([run_task_result(weight=0.0)], 3, 1).mean() is None


def run_task_result(weight: float):
    from sim.protocols.federated.server import TaskResult

    return TaskResult(np.zeros(3), weight)


def test_server_momentum_is_carried_in_state():
    algorithm = FedAvg(server_lr=1.0, server_momentum=0.5)
    state = algorithm.server_init(np.zeros(2, np.float32))
    delta = np.ones(2, np.float32)
    state = algorithm.server_update(state, delta, 1)
    state = algorithm.server_update(state, delta, 2)
    np.testing.assert_allclose(state.params, [-(1 + 1.5)] * 2)


@pytest.mark.parametrize(
    "field,value",
    [
        ("client_lr", -0.1),
        ("server_lr", -1.0),
        ("local_epochs", 0),
        ("client_momentum", 1.5),
        ("server_optimizer", "rmsprop"),
    ],
)
def test_invalid_hyperparameters_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        FedAvg(**{field: value})


def test_client_update_returns_a_pseudo_gradient():
    # delta = theta_server - theta_client, and one SGD step is -lr * grad: delta = lr * grad.
    algorithm = FedAvg(client_lr=0.1, batch_size=8)
    model = linear_model()
    data = tiny_population()
    from sim.training.model import ClientData

    client = ClientData.gather(data.x, data.y, np.array([2]), torch.device("cpu"))
    update = algorithm.client_update(
        model, np.zeros(6, np.float32), client, np.random.default_rng(0), 1
    )
    assert isinstance(update, ClientUpdate)
    np.testing.assert_allclose(
        update.delta, 0.1 * np.array([0.5, 0.5, -0.5, -0.5, 0.5, -0.5]), atol=1e-7
    )
