"""The churn-aware retraining protocol (``protocol=retraining``)."""
