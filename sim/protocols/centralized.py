"""The centralized protocol: the same model trained on the pooled data of all clients, the
reference line that federated papers draw (e.g. McMahan et al., AISTATS 2017, Sec. 3).

Every round, the algorithm's client update runs once on one client that holds every training
example of the population, and its server update applies the result: with FedAvg and server SGD
at lr 1, a round is ``local_epochs`` epochs of minibatch SGD (``client_lr``, ``batch_size``,
``client_momentum``) over the pooled data. The initial parameters, the test set, the evaluation
and the checkpoints are the federated protocol's, so its curves and a federated run's compare
round for round; per-client accuracy is not measured (there is one client).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import ConfigError
from sim.interfaces.federated import CohortSampling
from sim.interfaces.protocol import Setup
from sim.protocols.federated.protocol import (
    RoundJob,
    RoundSchedule,
    federated_components,
    load_population,
)


@dataclass
class Centralized(RoundSchedule):
    """``rounds`` rounds of the algorithm's update on the pooled data."""

    def prepare(self, setup: Setup) -> RoundJob:
        env, algorithm, model = federated_components(setup, "centralized")
        if setup.components.get("aggregator") is not None:
            raise ConfigError("aggregator: protocol=centralized has one client; it takes none")
        if hasattr(algorithm, "privacy_spent"):
            raise ConfigError(
                f"algorithm: {type(algorithm).__name__} protects clients among many; "
                "protocol=centralized has one client holding all the data"
            )
        pooled = load_population(env, setup.seed).pooled()
        return RoundJob.start(
            self,
            setup,
            pooled,
            model,
            algorithm,
            sampling=CohortSampling("fixed", 1, 1),
            clients_per_task=1,
        )
