"""Models: every network a config names (``conf/model/``: logistic, linear, MLP, CNN, GPT, T5,
the pretrained SmolLM2; ``conf/learner/``: the pool learners), one module each, as dataclasses
whose fields are the config's keys; import the module you need."""
