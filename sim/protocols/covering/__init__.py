"""The active-covering protocol (``protocol=covering``)."""
