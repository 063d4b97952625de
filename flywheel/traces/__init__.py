"""Traces: queries over stored traces, their rollups and the one table of signals."""
