"""The schema revision this code reads and writes, free of the database layer: the driver
path (:mod:`store.direct`) checks it before trusting a store, as :func:`store.init_db` does."""

#: The number of the head migration revision (store/migrations/versions/NNNN_*.py): bumped
#: with every new revision; SQLite's ``PRAGMA user_version`` holds it once a store is there,
#: PostgreSQL's ``alembic_version`` its zero-padded spelling.
SCHEMA_VERSION = 6
