"""schemathesis hooks for souk's merchant API (loaded by tests/it/schemathesis.rs).

A real client sends a fresh Idempotency-Key with each new request, and a cursor only as the
`next_cursor` an earlier page gave it. Generated values for both would be refused correctly
(422 idempotency_key_reused, 400 invalid_cursor) and reported as "valid data rejected", so
every case gets a fresh key, and positive cases no invented cursor.
"""

import uuid

import schemathesis


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = str(uuid.uuid4())


@schemathesis.hook
def filter_query(ctx, query):
    return not query or not query.get("cursor")
