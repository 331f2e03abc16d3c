"""Shared fixtures: Redis (real, database 13, a key prefix per test) and fakes."""

import os

# Tests never read a developer's .env (the project's is found from any folder): every
# process they start inherits this; a test about .env files sets its own.
os.environ.setdefault("SORA_ENV_FILE", os.devnull)

pytest_plugins = ["tests.redis_fixtures"]
