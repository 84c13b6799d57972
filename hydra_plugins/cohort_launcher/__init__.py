"""Cohort's Hydra launcher plugin (``hydra/launcher=cohort``)."""
