"""Alembic migrations: every schema change of Hubwarden is a revision in `versions/`.

Run them with `hubwarden db upgrade` (or `proxy.store.db.upgrade_schema`); `alembic` by hand
works too from the repository root (`alembic.ini`), against the database the settings name.
"""
