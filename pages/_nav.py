"""The app's pages: section, file, sidebar title, icon and the roles that see each."""

PAGES = {
    "Loop": [
        ("pages/overview.py", "Overview", ":material/dashboard:", ("labeler", "reviewer", "lead")),
        ("pages/traces.py", "Traces", ":material/list_alt:", ("labeler", "reviewer", "lead")),
        ("pages/sample.py", "Sample", ":material/filter_alt:", ("lead",)),
        ("pages/review.py", "Review scrubs", ":material/shield_person:", ("reviewer", "lead")),
        ("pages/label.py", "Label", ":material/label:", ("labeler", "reviewer", "lead")),
        ("pages/taxonomy.py", "Taxonomy", ":material/category:", ("labeler", "reviewer", "lead")),
        ("pages/drift.py", "Drift", ":material/trending_up:", ("lead",)),
    ],
    "Eval": [
        ("pages/evalsets.py", "Eval sets", ":material/dataset:", ("lead",)),
        ("pages/quality.py", "Pass rate", ":material/monitoring:", ("lead",)),
        ("pages/gate.py", "Release gate", ":material/verified:", ("lead",)),
        ("pages/judge.py", "Judge", ":material/gavel:", ("lead",)),
        ("pages/online.py", "Online quality", ":material/monitor_heart:", ("lead",)),
    ],
    "Admin": [
        ("pages/ingest.py", "Import", ":material/upload_file:", ("lead",)),
        ("pages/audit.py", "Audit log", ":material/history:", ("lead",)),
        ("pages/privacy.py", "Privacy", ":material/privacy_tip:", ("lead",)),
        ("pages/cycle.py", "Weekly cycle", ":material/autorenew:", ("lead",)),
    ],
}


def titles_for(role: str) -> list[str]:
    """The sidebar titles a user of ``role`` sees, in sidebar order."""
    return [title for pages in PAGES.values() for _, title, _, roles in pages if role in roles]
