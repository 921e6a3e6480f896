"""Shared test setup: JAX runs in float64, as the command line runs it."""

import jax

jax.config.update("jax_enable_x64", True)
