"""Encoder-decoder pre-training by a pluggable objective, then fine-tuning on proxy tasks."""
