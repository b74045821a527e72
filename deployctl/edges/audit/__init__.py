"""The audit store edge: append-only SQLite and PostgreSQL stores behind the AuditStore protocol."""
