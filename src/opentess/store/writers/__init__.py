"""The writes of executions behind one seam, ``ExecutionWriter``: create, finish and set_status
(``insert``, ``update``) and the statements of the reaper (``execute``).

SQLAlchemy's statement building and its async adaptation cost about a millisecond per statement;
the two writes of every call (create, finish) run on every request, so where the driver allows it
they go to it directly with SQL built once: on SQLite one writer thread with group commit
(``SqliteWriter``: SQLite has one writer anyway, and every write going through that thread leaves
it no other connection of ours to fight with for the lock), on PostgreSQL through asyncpg with
concurrent writes pipelined (``PostgresWriter``). Any other database (in-memory SQLite, another
driver) is written through the engine (``SqlAlchemyWriter``). Reads stay on SQLAlchemy, and rows
written by any writer read back through it unchanged: every writer passes the same contract suite
(tests/test_writers.py) on both backends."""

from opentess.store.writers.base import ExecutionWriter, WriterOptions, make_writer, register_writer

__all__ = ["ExecutionWriter", "WriterOptions", "make_writer", "register_writer"]
