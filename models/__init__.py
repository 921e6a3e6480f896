"""Probabilistic ensemble models (numpyro model functions), one per module."""
