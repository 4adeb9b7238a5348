"""Central's versioned schema migrations (Alembic), shipped inside the package; run them with
:func:`central.migrate.upgrade` (central does at start) or ``shilian central migrate``."""

#: The newest revision, so that a database already there is recognised without loading Alembic
#: (tests/test_central_schema.py checks it against the scripts). Update it with each migration.
HEAD = "0003"
