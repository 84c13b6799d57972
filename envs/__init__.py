"""Environments (federated populations, active-learning pools) and model specs, named by
``_target_`` in ``conf/`` (e.g. ``envs.tabular.Tabular``); import the module you need."""
