import pandas as pd
import streamlit as st

from flywheel.auth import require_role
from flywheel.config import load_config
from flywheel.errors import FlywheelError
from flywheel.formats import INGEST_FORMATS
from flywheel.ingest.run import conflicting_traces, ingest_runs, ingest_upload, quarantined_lines
from pages._charts import show_table
from pages._ui import current_user, database, md

db, user = database(), current_user()
require_role(user, "lead")
config = load_config()
st.title("Import traces")
st.caption(
    "JSONL (one trace object per line) or CSV with the same column names, or span exports "
    "(OTLP JSON, OpenInference, Langfuse); .gz accepted. "
    "Re-importing is safe: traces already stored are counted as duplicates."
)

upload = st.file_uploader("Trace file", type=["jsonl", "ndjson", "json", "csv", "gz"])
fmt = st.selectbox(
    "Format",
    ["detect", *INGEST_FORMATS],
    help="detect: told by the file name and its first record; name the format when detection guesses wrong",
)


def _conflicts(rows: list[dict]) -> None:
    """Each trace whose stored content differs from the file's: the lead looks these up by id."""
    if rows:
        st.caption(f"{len(rows):,} trace(s) already stored with other content; the stored version was kept:")
        show_table(pd.DataFrame(rows, columns=["file", "line", "trace_id"]), hide_index=True)


if upload is not None and st.button("Import", type="primary"):
    bar = st.progress(0.0, text=f"Importing {md(upload.name)}...")

    def _progress(lines: int, done: int, total: int) -> None:
        bar.progress(min(1.0, done / total) if total else 0.0, text=f"{lines:,} lines read")

    try:
        report = ingest_upload(
            db,
            upload,
            upload.name,
            actor=user.name,
            config=config,
            progress=_progress,
            fmt=None if fmt == "detect" else fmt,
        )
    except FlywheelError as error:
        st.error(md(error))
    else:
        st.success(report.summary())
        _conflicts(report.conflicts)
    finally:
        bar.empty()

runs = ingest_runs(db, stale_after=config.run_stale_seconds)
if not runs:
    st.info("No imports yet.")
    st.stop()
st.subheader("Recent imports")
show_table(
    pd.DataFrame(runs)[
        [
            "id",
            "started_at",
            "actor",
            "sources",
            "status",
            "lines_read",
            "ingested",
            "duplicates",
            "changed",
            "quarantined",
        ]
    ],
    hide_index=True,
)
run_id = st.selectbox("Quarantine and conflicts of run", [r["id"] for r in runs])
_conflicts(conflicting_traces(db, run_id))
bad = quarantined_lines(db, user, run_id)
if bad:
    show_table(pd.DataFrame(bad)[["file", "line_no", "reason", "raw"]], hide_index=True)
else:
    st.caption("Nothing quarantined in this run.")
