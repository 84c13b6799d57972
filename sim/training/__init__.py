"""Training building blocks shared by algorithms and protocols: flat-parameter models
(:mod:`.model`), local minibatch training with an algorithm's loss term (:mod:`.sgd`), many
clients at once (:mod:`.vectorized`), and server optimizers on flat vectors (:mod:`.optim`,
numpy only). No Ray here."""
