"""Project-wide test setup: one torch thread per xdist worker, and a private divssl cache."""

import os

import pytest
import torch


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Two workers on two cores: more threads per worker only oversubscribe the CPU.
        torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep feature/pool caches of the test session out of the user's ~/.cache/divssl."""
    old = os.environ.get("DIVSSL_CACHE")
    os.environ["DIVSSL_CACHE"] = str(tmp_path_factory.mktemp("divssl_cache"))
    yield
    if old is None:
        os.environ.pop("DIVSSL_CACHE", None)
    else:
        os.environ["DIVSSL_CACHE"] = old
