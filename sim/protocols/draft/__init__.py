"""The draft-distillation protocol (DistillSpec with a pretrained target)."""
