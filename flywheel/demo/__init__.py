"""The demo: synthetic traffic, labels, judgments and eval history for a ready demo database."""
