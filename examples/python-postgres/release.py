"""The release phase: the schema migration, before any dyno of the release starts."""

import os

import psycopg

with psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=10) as conn:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS visits ("
        " id bigserial PRIMARY KEY,"
        " dyno text NOT NULL,"
        " at timestamptz NOT NULL DEFAULT now())"
    )
print("release phase: table visits ready", flush=True)
