"""File formats the CLI offers, named here so its parser is built without importing the readers and writers.

``python -m flywheel scrub`` should not pay for sqlite-utils and pandas (imported by the store) at start-up.
"""

INGEST_FORMATS = ("jsonl", "csv", "otlp-json", "openinference", "langfuse")
EXPORT_FORMATS = ("jsonl", "csv", "inspect", "promptfoo", "openai-evals")
