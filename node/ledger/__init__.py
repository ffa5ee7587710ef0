"""The relational ledger (spec ``postgres_relational_layer``): jobs, allocations,
workers, tadpoles, their events and metrics, dynamic attributes, code versions and
analysis work, on PostgreSQL (``ADAPTIVE_DATABASE_URL``) or an embedded SQLite file.

:mod:`node.ledger.schema` is the model; :mod:`node.ledger.migrate` creates a fresh
database from it and brings an existing one to the newest reviewed migration
(``node/ledger/migrations``)."""
