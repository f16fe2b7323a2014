"""The store: one SQL database (SQLite by default, PostgreSQL to scale out) behind SQLAlchemy."""

from fineloop.store.core import Store

__all__ = ["Store"]
