"""Triton model repositories for the models tailmark serves, so the two servers can be compared."""
