"""Central's versioned schema migrations (Alembic), shipped inside the package; run them with
:func:`central.migrate.upgrade` (central does at start) or ``shilian-central migrate``."""
