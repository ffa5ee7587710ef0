"""Backups and restores of the whole cluster (``docs/backup.md``).

``chunks`` (records into content-addressed chunks), ``seal`` (zstd + age),
``manifest``, ``retention`` (the keep schedule) are pure; ``repository`` is the
storage (a local directory behind a small interface), ``archive`` writes, verifies,
reads and prunes backups, ``collect`` gathers one from a running cluster, and
``restore`` builds a new cluster's data directories from one.
"""
