"""Plug-ins of :mod:`sim.interfaces.federated`."""
