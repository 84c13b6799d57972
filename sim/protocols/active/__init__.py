"""The active-learning protocol: :mod:`.protocol` (settings and the loop), :mod:`.oracle` (the
labeling oracles), :mod:`.learner` (the MLP learner plug-in)."""
