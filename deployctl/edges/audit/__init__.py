"""The audit store edge: append-only SQLite and PostgreSQL stores behind the AuditStore protocol.

``schema`` (tables, triggers, migrations), ``dialect`` (connection hooks, migrating forward),
``chain`` (the audit chain's hashes, MACs and verdicts, pure) and ``chained`` (appending to it under
its lock, verifying it), ``outbox`` and ``sql`` (the queries both backends share), ``sqlite`` and ``postgres`` (the two
backends), ``url`` (where the store is and opening it).
"""
