"""The runtime: the run (:mod:`.run`), config schemas (:mod:`.config`), Ray's lifetime
(:mod:`.session`), worker actors (:mod:`.workers`), outputs and checkpoints. Knows no protocol,
algorithm or env by name: it builds them from the config's ``_target_``."""
