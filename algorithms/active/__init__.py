"""Plug-ins of :mod:`sim.interfaces.active`."""
