"""Plug-ins of :mod:`sim.interfaces.pretraining`."""
