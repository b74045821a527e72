"""Fixtures shared by all tests. Each fixture family lives in its own module under tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.gitrepo",
    "tests.fixtures.kafka",
    "tests.fixtures.postgres",
    "tests.fixtures.prometheus",
    "tests.fixtures.registry",
]
