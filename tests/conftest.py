"""Shared fixtures: Redis (real, database 13, a key prefix per test) and fakes."""

pytest_plugins = ["tests.redis_fixtures"]
