"""Reporting: ``cohort report`` (:mod:`.report`), win/tie/loss comparison (:mod:`.compare`),
plots (:mod:`.plotting`) and the Hydra multirun callbacks (:mod:`.callbacks`)."""
