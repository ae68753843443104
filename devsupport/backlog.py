"""An outbox backlog made in one SQL statement: what a daily run over 100,000 agreements leaves
for the relay, for tests and benchmarks of everything that must stay quick behind it.

Rows are ``invoice.issued`` envelopes from invoicing (bulk priority, the database default), each
about its own invoice, unpublished, due now and ``spread_seconds`` old at most, so the relay can
publish them as they are. Needs Django set up (it writes through Django's connection).
"""

from __future__ import annotations


def outbox_backlog_insert(n: int, *, spread_seconds: int = 3600, published: bool = False) -> None:
    """Insert ``n`` outbox rows by INSERT ... SELECT generate_series (about a second per 100,000).
    ``published``: rows the relay already published (an event store's history) instead."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            """
            INSERT INTO events_outboxevent (id, type, schema_version, occurred_at, producer, aggregate_type,
                aggregate_id, aggregate_version, data, attempts, last_error, errors, sns_message_id,
                next_attempt_at, published_at)
            SELECT gen_random_uuid(), 'invoice.issued', 1, t.at, 'invoicing', 'invoice', t.invoice, 1,
                   jsonb_build_object('invoice_id', t.invoice, 'number', 'BKL-' || t.i,
                                      'total_minor', 1999, 'currency', 'EUR'),
                   CASE WHEN %(published)s THEN 1 ELSE 0 END, '', '[]'::jsonb, '', t.at,
                   CASE WHEN %(published)s THEN t.at END
              FROM (SELECT i, gen_random_uuid()::text AS invoice,
                           now() - make_interval(secs => %(spread)s * (%(n)s - i)::float8 / %(n)s) AS at
                      FROM generate_series(1, %(n)s) AS i) AS t
            """,
            {"n": n, "spread": spread_seconds, "published": published},
        )
