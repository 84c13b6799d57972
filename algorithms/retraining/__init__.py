"""Plug-ins of :mod:`sim.interfaces.retraining`."""
