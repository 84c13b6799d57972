"""Cohort's runtime: protocols, Ray actors, configs, outputs. Knows no particular algorithm."""

from sim.run import Result, compose, run

__all__ = ["Result", "compose", "run"]
