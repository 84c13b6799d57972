"""The plug-in interfaces: what a protocol, an algorithm, a selector, a learner or an env
implements, and the data they exchange. Numpy only (no torch, Ray or Hydra), so importing a
plug-in costs what the plug-in itself needs."""
