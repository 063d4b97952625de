"""The store: the SQLite database (open, write, query), its migrations, the clock, the audit log."""
