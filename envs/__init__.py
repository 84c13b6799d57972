"""Environments: federated populations, active-learning pools, corpora and text domains, named
by ``_target_`` in ``conf/env/`` (e.g. ``envs.tabular.Tabular``); import the module you need.
Models are in :mod:`models`."""
