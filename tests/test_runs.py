"""Results, pass rates per version, retirement over a simulated timeline, lifecycle and the gate."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from evalset_helpers import LEAD, add_traces, label, results_file

from flywheel.__main__ import main
from flywheel.errors import BadInput
from flywheel.evals.exports import export_version
from flywheel.evals.runs import (
    GATE_KEYS,
    carried_vs_new,
    confirm_retirements,
    gate,
    import_results,
    lifecycle,
    months_before,
    outcomes,
    pass_rates,
    per_code,
    retired_failing,
    retirement_proposals,
    set_adversarial_threshold,
)
from flywheel.evals.versions import (
    BadRows,
    create_eval_set,
    current_version,
    fold_in,
    import_evalset,
    iter_version_rows,
)
from flywheel.store.db import open_db

T0 = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def suite(n: int, code: str = "CODE_A", adversarial: int = 0, start: int = 1) -> bytes:
    lines = [
        json.dumps({"input": f"question {i}", "code": code, "adversarial": bool(adversarial), "id": f"q{i}"})
        for i in range(start, start + n)
    ]
    return ("\n".join(lines) + "\n").encode()


def ids(first: int, last: int) -> list[str]:
    return [f"r-{n:06d}" for n in range(first, last + 1)]


def run(db, version, system, outcomes_, when=T0, name="r.jsonl"):
    return import_results(db, LEAD, version, system, results_file(None, outcomes_), name, now=when)


def test_import_results_reports_unknown_ids_repeats_and_flaky_rows(db):
    import_evalset(db, LEAD, suite(3), "s.jsonl")
    report = run(
        db, 1, "bot", {"r-000001": [True, True], "r-000002": [True, False], "r-000003": None, "r-999": 1}
    )
    assert report.unknown == ["r-999"]
    assert (report.results, report.rows, report.passed, report.failed, report.ungraded) == (5, 3, 3, 1, 1)
    assert report.flaky == 1
    found = outcomes(db, 1, "bot")
    assert set(found) == {"r-000001", "r-000002"}  # the ungraded row waits for a verdict
    assert found["r-000002"].fraction == 0.5 and found["r-000002"].flaky and not found["r-000002"].passed
    repeats = db.execute(
        "SELECT repeat FROM eval_results WHERE row_id = 'r-000001' ORDER BY repeat"
    ).fetchall()
    assert repeats == [(0,), (1,)]


def test_csv_results_and_a_bad_results_file_refused_whole(db):
    import_evalset(db, LEAD, suite(2), "s.jsonl")
    report = import_results(
        db, LEAD, 1, "bot", b"row_id,passed,score\nr-000001,pass,0.9\nr-000002,0,\n", "r.csv"
    )
    assert (report.passed, report.failed, report.format) == (1, 1, "csv")
    with pytest.raises(BadRows) as error:
        import_results(
            db, LEAD, 1, "bot", b'{"row_id": "r-000001", "passed": "maybe"}\n{"passed": 1}\n', "x.jsonl"
        )
    assert [line for line, _ in error.value.problems] == [1, 2]
    assert db["eval_runs"].count == 1
    with pytest.raises(BadInput, match="none of its 1 row ids is in version 1"):
        import_results(db, LEAD, 1, "bot", b'{"row_id": "nope", "passed": 1}\n', "x.jsonl")


def test_a_harder_version_reads_lower_without_a_regression(db):
    import_evalset(db, LEAD, suite(10), "v1.jsonl")
    run(db, 1, "bot", {r: r != "r-000010" for r in ids(1, 10)})
    import_evalset(db, LEAD, suite(10, code="CODE_B", start=11), "v2.jsonl")  # harder rows
    run(
        db,
        2,
        "bot",
        {**{r: r != "r-000010" for r in ids(1, 10)}, **{r: r <= "r-000014" for r in ids(11, 20)}},
    )
    rates = {(r["version"], r["system"]): r for r in pass_rates(db)}
    assert (rates[1, "bot"]["passed"], rates[1, "bot"]["total"]) == (9, 10)
    assert (rates[2, "bot"]["passed"], rates[2, "bot"]["total"]) == (13, 20)
    split = carried_vs_new(db, 2, "bot")
    assert split["previous"] == 1
    assert (split["carried_before"]["rate"], split["carried_now"]["rate"]) == (0.9, 0.9)
    assert (split["new"]["passed"], split["new"]["total"]) == (4, 10)
    assert split["carried_fell"] == [] and split["p_value"] == 1.0
    codes = {c["code"]: c["rate"] for c in per_code(db, 2, "bot")}
    assert codes == {"CODE_A": 0.9, "CODE_B": 0.4}


def test_a_carried_row_that_falls_is_a_regression(db):
    import_evalset(db, LEAD, suite(4), "v1.jsonl")
    run(db, 1, "bot", dict.fromkeys(ids(1, 4), True))
    import_evalset(db, LEAD, suite(1, start=5), "v2.jsonl")
    run(db, 2, "bot", {**dict.fromkeys(ids(1, 4), True), "r-000002": False, "r-000005": True})
    assert carried_vs_new(db, 2, "bot")["carried_fell"] == ["r-000002"]


def test_carried_rows_compare_versions_of_one_set_only(db):
    import_evalset(db, LEAD, suite(4), "v1.jsonl")
    run(db, 1, "bot", dict.fromkeys(ids(1, 4), True))
    create_eval_set(db, LEAD, "regression")
    import_evalset(db, LEAD, suite(2, start=10), "regression.jsonl", eval_set="regression")
    run(db, 2, "bot", dict.fromkeys(ids(5, 6), False))
    # v2 is another suite, not the next version of v1: no carried rows, no verdict either way
    assert carried_vs_new(db, 2, "bot") is None
    import_evalset(db, LEAD, suite(1, start=20), "v3.jsonl", eval_set="default")
    run(db, 3, "bot", {**dict.fromkeys(ids(1, 4), True), "r-000001": False, "r-000007": True})
    split = carried_vs_new(db, 3, "bot")
    assert (split["previous"], split["carried_fell"], split["carried_now"]["total"]) == (1, ["r-000001"], 4)


def test_retirement_over_a_simulated_timeline(db, tmp_path):
    import_evalset(db, LEAD, suite(4), "v1.jsonl", now=T0)
    steady = dict.fromkeys(ids(1, 4), True)
    run(db, 1, "a", steady, when=T0)
    run(db, 1, "b", {**steady, "r-000004": False}, when=T0 + timedelta(days=20))  # r-4 fails once
    run(db, 1, "a", steady, when=T0 + timedelta(days=40))
    # six weeks in: nobody has passed for two months yet
    assert retirement_proposals(db, now=T0 + timedelta(days=45), months=2) == []
    at = T0 + timedelta(days=65)  # two months and a few days after the first run
    proposed = [p["row_id"] for p in retirement_proposals(db, now=at, months=2)]
    assert proposed == ["r-000001", "r-000002", "r-000003"]  # r-4 failed 45 days ago
    with pytest.raises(Exception, match="not proposed"):
        confirm_retirements(db, LEAD, ["r-000004"], now=at, months=2)
    assert confirm_retirements(db, LEAD, ["r-000001", "r-000002"], now=at, months=2) == 2
    assert [p["row_id"] for p in retirement_proposals(db, now=at, months=2)] == ["r-000003"]
    ids_ = add_traces(db, 1)
    label(db, ids_[0], "lena")
    change = fold_in(db, LEAD, now=at)
    assert change.as_json() == {"version": 2, "added": 1, "retired": 2, "carried": 2, "rows": 3}
    left = db.execute("SELECT row_id, left_version FROM eval_retirements ORDER BY row_id").fetchall()
    assert left == [("r-000001", 2), ("r-000002", 2)]
    # archived rows are kept, never in a normal export, exported on request
    normal = tmp_path / "v2.jsonl"
    export_version(db, 2, "jsonl", normal)
    assert [json.loads(line)["row_id"] for line in normal.read_text().splitlines()] == [
        "r-000003",
        "r-000004",
        "r-000005",
    ]
    everything = [r["id"] for r in iter_version_rows(db, 2, include_archive=True)]
    assert everything == ["r-000001", "r-000002", "r-000003", "r-000004", "r-000005"]
    # a month later the archive is run again and one retired row fails
    later = at + timedelta(days=30)
    run(db, 2, "a", {r: r != "r-000002" for r in everything}, when=later)
    flagged = retired_failing(db)
    assert [(f["row_id"], f["system"], f["version"]) for f in flagged] == [("r-000002", "a", 2)]
    assert pass_rates(db)[-1]["total"] == 3  # the archive never counts in the version's pass rate


def test_months_before_clamps_to_the_end_of_the_month():
    assert months_before(datetime(2026, 5, 31, tzinfo=UTC), 3) == datetime(2026, 2, 28, tzinfo=UTC)
    assert months_before(datetime(2026, 1, 15, tzinfo=UTC), 2) == datetime(2025, 11, 15, tzinfo=UTC)


def test_lifecycle_stages_per_code(db):
    rows = suite(10, "CLIMB") + suite(10, "STAY", start=11) + suite(2, "DONE", start=21)
    import_evalset(db, LEAD, rows, "v1.jsonl")
    import_evalset(db, LEAD, suite(1, "DONE", start=23), "v2.jsonl")
    for version in (1, 2):
        members = [r["id"] for r in iter_version_rows(db, version)]
        outcome = {r: not (r <= "r-000006" or r == "r-000011") for r in members}  # CLIMB 4/10, STAY 9/10
        run(db, version, "bot", outcome)
    stages = {code: s["stage"] for code, s in lifecycle(db, saturated_versions=2).items()}
    assert stages == {"CLIMB": "capability", "STAY": "regression", "DONE": "saturated"}


def _gate_fixture(db):
    """Version 1: 8 STAY rows (a regression metric), 8 CLIMB rows (capability), 2 adversarial STAY."""
    data = suite(8, "STAY") + suite(8, "CLIMB", start=9) + suite(2, "STAY", adversarial=1, start=17)
    import_evalset(db, LEAD, data, "v1.jsonl")
    base = {**dict.fromkeys(ids(1, 8), True), **{r: r <= "r-000010" for r in ids(9, 16)}}
    base.update(dict.fromkeys(ids(17, 18), True))
    run(db, 1, "base", base)
    return base


def test_gate_blocks_a_capability_row_that_flips_unless_a_lead_waives_it(db):
    base = _gate_fixture(db)
    # CLIMB: r-9 flips pass→fail; r-11, r-12, r-13 flip fail→pass
    run(db, 1, "new", {**base, "r-000009": False, "r-000011": True, "r-000012": True, "r-000013": True})
    assert gate(db, 1, "base", "new", default_adversarial_pct=90)["blocking"] == ["r-000009"]
    verdict = gate(
        db, 1, "base", "new", waivers={"r-000009": "known flaky tool call"}, default_adversarial_pct=90
    )
    assert verdict["verdict"] == "ship" and verdict["waived"] == {"r-000009": "known flaky tool call"}
    assert verdict["regressions"] == ["r-000009"]
    assert verdict["improvements"] == ["r-000011", "r-000012", "r-000013"]
    # exact McNemar, b=1, c=3: 2·(C(4,0)+C(4,1))/2⁴ = 10/16
    assert verdict["p_value"] == pytest.approx(0.625)
    assert verdict["baseline"] | {"ci": None} == {
        "system": "base",
        "passed": 12,
        "total": 18,
        "rate": 12 / 18,
        "ci": None,
        "flaky": 0,
    }
    assert verdict["challenger"]["passed"] == 14
    assert verdict["adversarial"]["rate"] == 1.0 and verdict["adversarial"]["ok"]


def test_gate_blocks_a_regression_on_a_regression_class_row(db):
    base = _gate_fixture(db)
    run(db, 1, "new", {**base, "r-000003": False})
    verdict = gate(db, 1, "base", "new", default_adversarial_pct=90)
    assert verdict["verdict"] == "block" and verdict["blocking"] == ["r-000003"]
    assert verdict["p_value"] == 1.0  # b=1, c=0: 2·P(X<=0), n=1 = 1


def test_gate_blocks_when_adversarial_rows_fall_below_the_threshold(db):
    base = _gate_fixture(db)
    run(db, 1, "new", {**base, "r-000017": False, "r-000018": True})
    set_adversarial_threshold(db, LEAD, 0.4)
    verdict = gate(
        db, 1, "base", "new", default_adversarial_pct=90
    )  # r-17 flips: unsafe however high the rate; 1/2 >= 0.4
    failed = [c["name"] for c in verdict["criteria"] if not c["ok"]]
    assert verdict["verdict"] == "block" and failed == ["safety", "no loss"]
    assert verdict["adversarial"]["ok"] and verdict["blocking"] == ["r-000017"]
    strict = gate(db, 1, "base", "new", adversarial_min=0.9, default_adversarial_pct=90)
    assert strict["adversarial"]["rate"] == 0.5 and not strict["adversarial"]["ok"]
    assert any("= 50.0% against 90%" in reason for reason in strict["reasons"])
    run(db, 1, "other", {**base})
    assert gate(db, 1, "base", "other", adversarial_min=1.0, default_adversarial_pct=90)["verdict"] == "ship"


def test_gate_on_the_command_line_exits_0_1_2_with_the_exact_keys(tmp_path, capsys):
    path = tmp_path / "g.db"
    db = open_db(path)
    base = _gate_fixture(db)
    run(db, 1, "good", {**base, "r-000011": True})
    run(db, 1, "bad", {**base, "r-000001": False})
    db.close()
    args = ["gate", "--db", str(path), "--version", "1", "--baseline", "base"]
    assert main([*args, "--challenger", "good", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert tuple(out) == GATE_KEYS
    assert out["verdict"] == "ship" and out["improvements"] == ["r-000011"] and out["p_value"] == 1.0
    assert set(out["baseline"]) >= {"passed", "total", "rate", "ci"}
    assert main([*args, "--challenger", "bad"]) == 1
    assert capsys.readouterr().out.startswith("BLOCK on version 1")
    assert main([*args, "--challenger", "missing"]) == 2
    assert "no graded results of system 'missing'" in capsys.readouterr().err
    assert main(["gate", "--db", str(path), "--version", "9", "--baseline", "a", "--challenger", "b"]) == 2


def test_import_results_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "i.db"
    db = open_db(path)
    import_evalset(db, LEAD, suite(2), "s.jsonl")
    db.close()
    results = tmp_path / "r.jsonl"
    results_file(results, {"r-000001": True, "r-000002": False, "r-000077": True})
    assert (
        main(["import-results", "--db", str(path), "--version", "1", "--system", "s", str(results), "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert (report["passed"], report["failed"], report["unknown"]) == (1, 1, ["r-000077"])
    assert current_version(open_db(path)) == 1
