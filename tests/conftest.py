"""Fixtures shared by all tests. Each fixture family lives in its own module under tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.isolation",  # fails the run on processes, ports or namespaces the tests left behind
    "tests.fixtures.registry",  # before Kafka and Prometheus: their fixtures import its free_port
    "tests.fixtures.cluster",
    "tests.fixtures.gitrepo",
    "tests.fixtures.gitea",  # after gitrepo, which it imports
    "tests.fixtures.kafka",
    "tests.fixtures.postgres",
    "tests.fixtures.prometheus",
]
