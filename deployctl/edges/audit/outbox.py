"""The notification outbox queries: sinks, pending events and delivery attempts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import structlog

from deployctl.edges.audit.dialect import SqlDialect
from deployctl.model.audit import Delivery, OutboxEvent

log = structlog.get_logger(__name__)


class OutboxQueries(SqlDialect):
    """Registering sinks, listing the events a sink has not yet received, recording deliveries."""

    def register_sink(self, sink: str) -> None:
        with self._write() as cur:
            if cur.execute(self._sql("SELECT 1 FROM sinks WHERE name = ?"), (sink,)).fetchone():
                return
            last = cur.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
            cur.execute(
                self._sql("INSERT INTO sinks (name, first_outbox_id, added_at) VALUES (?, ?, ?)"),
                (sink, int(last), self._enc_time(datetime.now(UTC))),
            )
        log.info("notify.sink_registered", sink=sink, after_event=int(last))

    def pending_events(self, sink: str, *, now: datetime, limit: int = 100,
                       backfill_from: datetime | None = None) -> list[OutboxEvent]:
        # A sink gets the events from its registration on; a backfill reaches back to events created since
        # ``backfill_from`` instead. Either way an event it already received (or gave up) is not sent again.
        floor = "o.id > s.first_outbox_id" if backfill_from is None else "o.created_at >= ?"
        sql = f"""SELECT o.id, o.key, o.attempt_id, o.payload, o.created_at,
                   (SELECT count(*) FROM deliveries d WHERE d.outbox_id = o.id AND d.sink = ?)
               FROM outbox o JOIN sinks s ON s.name = ?
               WHERE {floor}
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.outbox_id = o.id AND d.sink = ?
                                 AND (d.next_attempt_at IS NULL OR d.next_attempt_at > ?))
               ORDER BY o.id LIMIT ?"""  # noqa: S608 - floor is one of two constant clauses
        floor_params = () if backfill_from is None else (self._enc_time(backfill_from),)
        rows = self._fetchall(sql, (sink, sink, *floor_params, sink, self._enc_time(now), limit))
        events = []
        for id_, key, attempt_id, payload, created_at, made in rows:
            created = self._dec_time(created_at)
            assert created is not None
            events.append(
                OutboxEvent(
                    id=int(id_),
                    key=key,
                    attempt_id=int(attempt_id),
                    payload=json.loads(payload),
                    created_at=created,
                    attempts_made=int(made),
                )
            )
        return events

    def record_delivery(self, delivery: Delivery) -> None:
        d = delivery
        with self._write() as cur:
            # Recorded once: SQLite's append-only trigger refuses a second row for the same key
            # (ON CONFLICT DO NOTHING alone would not reach the conflict), PostgreSQL's race is
            # settled by the constraint.
            exists = "SELECT 1 FROM deliveries WHERE outbox_id = ? AND sink = ? AND attempt_no = ?"
            if cur.execute(self._sql(exists), (d.outbox_id, d.sink, d.attempt_no)).fetchone():
                return
            cur.execute(
                self._sql(
                    "INSERT INTO deliveries "
                    "(outbox_id, sink, attempt_no, attempted_at, ok, error, next_attempt_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
                ),
                (
                    d.outbox_id,
                    d.sink,
                    d.attempt_no,
                    self._enc_time(d.attempted_at),
                    d.ok,
                    d.error,
                    self._enc_time(d.next_attempt_at),
                ),
            )

    def deliveries(self, *, sink: str | None = None) -> list[Delivery]:
        sql = "SELECT outbox_id, sink, attempt_no, attempted_at, ok, error, next_attempt_at FROM deliveries"
        params: tuple[Any, ...] = ()
        if sink is not None:
            sql += " WHERE sink = ?"
            params = (sink,)
        rows = self._fetchall(sql + " ORDER BY id", params)
        out = []
        for outbox_id, sink_, attempt_no, attempted_at, ok, error, next_at in rows:
            attempted = self._dec_time(attempted_at)
            assert attempted is not None
            out.append(
                Delivery(
                    outbox_id=int(outbox_id),
                    sink=sink_,
                    attempt_no=int(attempt_no),
                    attempted_at=attempted,
                    ok=bool(ok),
                    error=error,
                    next_attempt_at=self._dec_time(next_at),
                )
            )
        return out

    def next_retry_at(self, sink: str) -> datetime | None:
        sql = """SELECT min(last.next_at) FROM (
                 SELECT d.outbox_id, max(d.next_attempt_at) AS next_at,
                        sum(CASE WHEN d.next_attempt_at IS NULL THEN 1 ELSE 0 END) AS done
                 FROM deliveries d WHERE d.sink = ? GROUP BY d.outbox_id) last
               WHERE last.done = 0"""
        rows = self._fetchall(sql, (sink,))
        return None if not rows else self._dec_time(rows[0][0])

