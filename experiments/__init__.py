"""Experiments behind the notebooks: data that can be had offline and the small networks trained on it."""
