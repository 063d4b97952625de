import pandas as pd
import streamlit as st

from flywheel.auth import require_role
from flywheel.store import audit_entries
from pages._ui import current_user, database

db, user = database(), current_user()
require_role(user, "lead")
st.title("Audit log")
st.caption("Every change made through Flywheel: who, when, what.")
entries = audit_entries(db, limit=st.number_input("Entries", 10, 5000, 200, step=50))
if entries:
    st.dataframe(pd.DataFrame(entries), hide_index=True)
else:
    st.info("Nothing recorded yet.")
