"""Tests of the store use the database fixtures of tests/dbplugin.py (registered by the root
conftest): `db_url`, `db_engine`, `db_sessions`, `fresh_postgres_url`."""
