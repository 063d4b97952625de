"""Ingest: production traces read from files (JSONL, CSV, OTLP, OpenInference, Langfuse) into the store."""
