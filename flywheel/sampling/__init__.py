"""The sampling station: plans that pick production traces for the eval loop, and the batches they make.

    plans     the plan schema (one class per stratum kind), plan files and saved plans
    sql       a plan compiled to SQL for SQLite, DuckDB or Spark, with the same hash everywhere
    batches   running a plan on the store, previews, batches and ledgers, sample-then-scrub
    source    running a plan where the traces live (DuckDB over files, Spark SQL)

The window is one ISO week (the latest week with traces unless the plan or the caller names one).
A trace picked by several rules appears once in the batch with all its reasons; a cap on the batch
size drops random picks first, then stratified ones, never an anomaly: when the anomalies alone exceed
the cap, the batch holds all of them and nothing else, and says so (``Batch.over_cap``).
Every choice is a pure function of seed and data: the random predicate is an MD5 prefix comparison a
warehouse can run as plain SQL (``random_predicate_sql``), and quota picks take the traces that come
first in a seeded MD5 order.
"""
