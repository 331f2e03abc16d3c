"""Shared fixtures: Redis (real, database 13, a key prefix per test) and fakes."""

import os

import pytest

# Tests never read a developer's .env (the project's is found from any folder): every
# process they start inherits this; a test about .env files sets its own.
os.environ.setdefault("SORA_ENV_FILE", os.devnull)

pytest_plugins = ["tests.redis_fixtures"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module's tests on the real Redis run on the Redis Cluster too when the module says
    ON_CLUSTER_TOO = True (all of them), or names them in a set."""
    on = getattr(metafunc.module, "ON_CLUSTER_TOO", False)
    if "redis_url" not in metafunc.fixturenames or not on:
        return
    if on is True or metafunc.function.__name__ in on:
        metafunc.parametrize("redis_url", ["redis", "cluster"], indirect=True)
