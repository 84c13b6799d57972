"""Plug-ins of :mod:`sim.interfaces.covering`."""
