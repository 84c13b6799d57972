"""The federated protocol: :mod:`.protocol` (settings, set-up, the round loop) and :mod:`.actors`
(client workers and the server)."""
