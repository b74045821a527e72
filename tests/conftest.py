"""Fixtures shared by all tests. Each fixture family lives in its own module under tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.registry",  # first: the Kafka and Prometheus fixtures import its free_port
    "tests.fixtures.cluster",
    "tests.fixtures.gitrepo",
    "tests.fixtures.gitea",  # after gitrepo, which it imports
    "tests.fixtures.kafka",
    "tests.fixtures.postgres",
    "tests.fixtures.prometheus",
]
