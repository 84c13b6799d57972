"""Plug-ins of :mod:`sim.interfaces.synthesis`."""
