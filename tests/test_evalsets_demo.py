"""The demo's eval-set history, and the promise that no planted raw PII reaches an exported row."""

import json

from flywheel.auth import User
from flywheel.demo.history import DEMO_SYSTEMS
from flywheel.demo.traffic import demo_samples
from flywheel.evals.exports import FORMATS, export_version
from flywheel.evals.runs import carried_vs_new, gate, pass_rates, retired_failing
from flywheel.evals.versions import eval_set_versions, eval_sets, fold_in
from flywheel.store.db import open_db


def test_demo_has_a_living_eval_set(demo_copy):
    db = open_db(demo_copy)
    versions = eval_set_versions(db, "quality")
    assert [v["kind"] for v in reversed(versions)] == ["import", "fold_in", "fold_in"]
    assert versions[0]["retired"] > 0
    rates = {(r["version"], r["system"]): r["rate"] for r in pass_rates(db)}
    assert set(rates) == {(v, s) for v in (1, 2, 3, 4) for s in DEMO_SYSTEMS}
    for system in DEMO_SYSTEMS:
        assert rates[2, system] < rates[1, system]  # the harder version reads lower ...
        split = carried_vs_new(db, 2, system)
        assert split["carried_fell"] == []  # ... without a regression
        assert split["new"]["rate"] < split["carried_now"]["rate"]
    assert len(retired_failing(db)) == 1
    assert gate(db, 3, *DEMO_SYSTEMS, default_adversarial_pct=90)["verdict"] == "ship"
    # beside it, a frozen regression set: the spreadsheet's rows, run by both systems
    (regression,) = eval_set_versions(db, "regression")
    assert (regression["version"], regression["kind"]) == (4, "import")
    assert [(s["name"], s["frozen"]) for s in eval_sets(db)] == [("quality", 0), ("regression", 1)]
    assert gate(db, 4, *DEMO_SYSTEMS, default_adversarial_pct=90)["verdict"] == "ship"
    # coverage rows folded in, and rows graded by their code checks
    coverage = db.execute(
        "SELECT count(*) FROM eval_rows r JOIN eval_version_rows m ON m.row_id = r.id"
        " WHERE m.version = 3 AND r.coverage = 1"
    ).fetchone()[0]
    assert coverage > 0
    assert db.execute("SELECT count(*) FROM eval_results WHERE graded_by = 'check'").fetchone()[0] > 0
    # labels of the later batches wait for a lead to fold them in
    assert db.execute("SELECT count(*) FROM labels WHERE kind != 'not_a_bug'").fetchone()[0] > sum(
        v["added"] for v in versions if v["kind"] == "fold_in"
    )


def test_exported_rows_hold_none_of_the_planted_raw_pii(demo_copy, tmp_path):
    db = open_db(demo_copy)
    fold_in(db, User("ana", "lead"))  # every labeled failure, not only the demo's folds
    version = eval_set_versions(db)[0]["version"]
    planted = {p["value"] for sample in demo_samples(3, 1500) for p in sample.pii if len(p["value"]) >= 6}
    assert len(planted) > 100
    rows = 0
    for fmt in FORMATS:
        out = tmp_path / f"export.{fmt}"
        rows = export_version(db, version, fmt, out, include_archive=True)
        text = out.read_text()
        if fmt != "csv":
            text = " ".join(json.dumps(json.loads(line), ensure_ascii=False) for line in text.splitlines())
        leaked = sorted(value for value in planted if value in text)
        assert leaked == [], f"{fmt} export leaks {leaked[:5]}"
    assert rows > 50
    # the test can fail: the raw traces behind these rows do carry planted values
    raw = db.execute(
        "SELECT t.input FROM traces t JOIN eval_rows r ON r.trace_id = t.trace_id"
        " JOIN eval_version_rows m ON m.row_id = r.id WHERE m.version = ?",
        [version],
    ).fetchall()
    assert sum(any(value in text for value in planted) for (text,) in raw) >= 5
