"""Algorithm plug-ins, grouped by the interface they implement (``sim/interfaces/<group>.py``):
``federated``, ``active``, ``covering``, ``retraining``, ``teacher_student``, ``pretraining``,
``synthesis``; one file per algorithm (or per paper), configured by a YAML in the flat group
``conf/algorithm/``."""
