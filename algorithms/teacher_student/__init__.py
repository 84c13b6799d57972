"""Plug-ins of :mod:`sim.interfaces.teacher_student`."""
