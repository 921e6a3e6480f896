"""Shared test setup: JAX runs in float64, as the command line runs it."""

import jax

jax.config.update("jax_enable_x64", True)

import os  # noqa: E402

# the command line's persistent compilation cache stays out of the test runs (hermetic, nothing written to ~)
os.environ.setdefault("HTEVAL_CACHE", "off")
