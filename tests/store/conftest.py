"""The database fixtures of tests/dbplugin.py, for the tests of the store."""

from tests.dbplugin import db_engine, db_sessions, db_url, fresh_postgres_url

__all__ = ["db_engine", "db_sessions", "db_url", "fresh_postgres_url"]
