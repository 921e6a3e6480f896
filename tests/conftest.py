"""Shared test setup: JAX runs in float64, as the command line runs it."""

import jax

jax.config.update("jax_enable_x64", True)

import os  # noqa: E402

# the command line's persistent compilation cache stays out of the test runs (hermetic, nothing written to ~)
os.environ.setdefault("HTEVAL_CACHE", "off")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _stay_under_the_memory_map_limit():
    """The suite compiles hundreds of programs in one process; drop them before Linux's mapping limit is hit."""
    yield
    from hteval.nuts import release_compiled_programs_near_map_limit

    release_compiled_programs_near_map_limit()
