"""The release gate as a decision table: seed 000's exit criteria, sceptical cases first.

Version 1 has 20 rows: r-1..8 code A, r-9..16 code B, r-17..18 code C, r-19..20 adversarial. The
baseline passes every row but r-15, r-16, r-17 (ordinary 15/18 = 83%, code B at 6/8 = 75%) and both
adversarial rows. Each case changes the challenger (or the baseline) and says which criteria fail.
"""

import json

import pytest
from evalset_helpers import LEAD
from gate_support import BASE, ROWS, build, changed, r, results

from flywheel.__main__ import main
from flywheel.errors import BadInput, NotFound
from flywheel.evals.runs import (
    GATE_KEYS,
    gate,
    import_results,
    live_system,
    record_decision,
    release_decisions,
)
from flywheel.store.db import open_db

ADVERSARIAL = ROWS[18:]


# name: (challenger, baseline, options, verdict, failed criteria)
CASES = {
    "identical systems": (BASE, BASE, {}, "ship", []),
    "strict improvement": (changed(r16=True), BASE, {}, "ship", []),
    "one regression in a clean suite": (
        changed(r1=False),
        BASE,
        {},
        "block",
        ["zero regressions", "no loss"],
    ),
    "net gain with one regression": (
        changed(r1=False, r15=True, r16=True),
        BASE,
        {},
        "block",
        ["zero regressions"],
    ),
    "worse overall, three flips": (
        changed(r1=False, r2=False, r3=False),
        BASE,
        {},
        "block",
        ["zero regressions", "no loss"],
    ),
    "fixes two, breaks one": (changed(r1=False, r15=True, r16=True), BASE, {}, "block", ["zero regressions"]),
    "adversarial flip, rate still above threshold": (
        changed(r19=False, r16=True),
        BASE,
        {"adversarial_min": 0.5},
        "block",
        ["safety"],
    ),
    "adversarial rows missing": (changed(drop=ADVERSARIAL), BASE, {}, "block", ["complete", "safety"]),
    "ordinary rows missing (15 of 20 graded)": (
        changed(drop=ROWS[:5]),
        BASE,
        {},
        "block",
        ["complete"],
    ),
    "adversarial rate below threshold, nothing flips": (
        changed(changed(r20=False)),
        changed(r20=False),
        {"adversarial_min": 0.9},
        "block",
        ["safety"],
    ),
    "flip on a code the baseline passes at 75%": (
        changed(r9=False, r15=True),
        BASE,
        {},
        "block",
        ["zero regressions"],
    ),
    "adversarial flip while ordinary rows sit at 80%": (
        changed(r20=False, r16=True),
        BASE,
        {"adversarial_min": 0.0},
        "block",
        ["safety"],
    ),
    "flaky row listed apart": (
        changed(r1=[True, False, False], r16=True),
        changed(r1=[True, True]),
        {},
        "ship",
        [],
    ),
    "waived regression": (changed(r1=False, r16=True), BASE, {"waivers": {r(1): "tone only"}}, "ship", []),
    "require improvement, no change": (BASE, BASE, {"require_improvement": True}, "block", ["no loss"]),
    "require improvement, one fix": (changed(r16=True), BASE, {"require_improvement": True}, "ship", []),
    "an ungraded result counts as missing": (changed(r4=None), BASE, {}, "block", ["complete"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_gate_decision_table(name, tmp_path):
    challenger, baseline, options, expected, failed = CASES[name]
    db = build(tmp_path / "g.db", challenger, baseline)
    verdict = gate(db, 1, "base", "new", **options, default_adversarial_pct=90)
    assert verdict["verdict"] == expected, verdict["reasons"]
    assert [c["name"] for c in verdict["criteria"] if not c["ok"]] == failed
    assert [c["name"] for c in verdict["criteria"]] == ["complete", "safety", "zero regressions", "no loss"]


def test_the_table_through_the_command_line(tmp_path, capsys):
    """Exit code 0 ship / 1 block, and the JSON criteria, for every row of the table."""
    table = []
    for number, (name, (challenger, baseline, options, expected, failed)) in enumerate(CASES.items()):
        path = tmp_path / f"c{number}.db"
        build(path, challenger, baseline).close()
        args = ["gate", "--db", str(path), "--version", "1", "--baseline", "base", "--challenger", "new"]
        if "adversarial_min" in options:
            args += ["--adversarial-min", str(options["adversarial_min"])]
        for row_id, reason in options.get("waivers", {}).items():
            args += ["--waive", f"{row_id}={reason}"]
        if options.get("require_improvement"):
            args.append("--require-improvement")
        code = main([*args, "--json"])
        out = json.loads(capsys.readouterr().out)
        assert tuple(out) == GATE_KEYS
        assert code == (0 if expected == "ship" else 1), name
        assert [c["name"] for c in out["criteria"] if not c["ok"]] == failed, name
        table.append((name, code, out["verdict"], failed, out["unpaired"], out["flaky"], out["waived"]))
    by_name = {row[0]: row for row in table}
    assert by_name["ordinary rows missing (15 of 20 graded)"][4] == ROWS[:5]
    assert by_name["flaky row listed apart"][5] == [r(1)]
    assert by_name["waived regression"][6] == {r(1): "tone only"}
    for name, code, verdict, failed, unpaired, flaky, waived in table:
        print(f"{name:48} exit {code} {verdict:5} failed={failed} unpaired={len(unpaired)}", flaky, waived)


def test_a_waiver_on_an_adversarial_row_is_refused(tmp_path, capsys):
    path = tmp_path / "g.db"
    db = build(path, changed(r19=False), BASE)
    with pytest.raises(BadInput, match="adversarial: safety takes no waiver"):
        gate(
            db,
            1,
            "base",
            "new",
            adversarial_min=0.5,
            waivers={r(19): "it is fine"},
            default_adversarial_pct=90,
        )
    db.close()
    args = ["gate", "--db", str(path), "--version", "1", "--baseline", "base", "--challenger", "new"]
    assert main([*args, "--waive", f"{r(19)}=it is fine"]) == 2
    assert "safety takes no waiver" in capsys.readouterr().err
    assert main([*args, "--waive", f"{r(2)}=never flipped"]) == 2
    assert "nothing to waive" in capsys.readouterr().err
    assert main([*args, "--waive", f"{r(2)}"]) == 2
    assert "ROW_ID=REASON" in capsys.readouterr().err
    assert open_db(path)["release_decisions"].count == 0  # a refused waiver records nothing


def test_a_waived_decision_is_recorded_and_names_the_live_system(tmp_path, capsys):
    path = tmp_path / "g.db"
    build(path, changed(r1=False, r16=True), BASE).close()
    args = ["gate", "--db", str(path), "--version", "1", "--baseline", "base", "--challenger", "new"]
    assert main([*args, "--actor", "ana", "--waive", f"{r(1)}=tone only, checked by hand"]) == 0
    assert "waived r-000001: tone only, checked by hand" in capsys.readouterr().out
    db = open_db(path)
    (decision,) = release_decisions(db)
    assert (decision["verdict"], decision["decided_by"], decision["challenger"]) == ("ship", "ana", "new")
    assert decision["waived"] == {r(1): "tone only, checked by hand"}
    assert [c["name"] for c in decision["criteria"]] == ["complete", "safety", "zero regressions", "no loss"]
    entry = db.execute("SELECT actor, detail FROM audit_log WHERE action = 'release_decision'").fetchone()
    assert entry[0] == "ana" and json.loads(entry[1])["waived"] == {r(1): "tone only, checked by hand"}
    assert live_system(db)["system"] == "new"


def test_a_blocked_challenger_leaves_the_live_system_as_it_was(tmp_path):
    db = build(tmp_path / "g.db", changed(r16=True), BASE)
    record_decision(db, LEAD, gate(db, 1, "base", "new", default_adversarial_pct=90))
    import_results(db, LEAD, 1, "worse", results(changed(r1=False)), "worse.jsonl")
    blocked = gate(db, 1, "new", "worse", default_adversarial_pct=90)
    assert blocked["verdict"] == "block"
    record_decision(db, LEAD, blocked)
    assert live_system(db)["system"] == "new"
    assert [d["verdict"] for d in release_decisions(db)] == ["block", "ship"]


def test_a_version_without_adversarial_rows_cannot_show_safety(tmp_path):
    db = build(tmp_path / "g.db", BASE, BASE, adversarial=False)
    verdict = gate(db, 1, "base", "new", default_adversarial_pct=90)
    assert verdict["verdict"] == "block"
    assert "no adversarial rows" in next(c["detail"] for c in verdict["criteria"] if c["name"] == "safety")


def test_a_system_without_results_is_an_error_not_a_verdict(tmp_path):
    db = build(tmp_path / "g.db", BASE, BASE)
    with pytest.raises(NotFound, match="no graded results of system 'ghost'"):
        gate(db, 1, "base", "ghost", default_adversarial_pct=90)
    with pytest.raises(BadInput, match="expected two systems"):
        gate(db, 1, "base", "base", default_adversarial_pct=90)
