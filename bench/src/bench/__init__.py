"""The benchmark: sagakit against DBOS, Temporal and sagaz on the same PostgreSQL.

Every system runs the same order saga of five steps on the same business tables, in a
database of its own; see ``bench/README.md`` for how to run it and what it found.
"""
