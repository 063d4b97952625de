import json
import shutil

import pytest

from flywheel.__main__ import main
from flywheel.auth import User
from flywheel.cycle import cycle_settings, cycles, new_inbox_files, set_cycle_settings
from flywheel.demo.history import DEMO_SYSTEMS
from flywheel.errors import PermissionDenied
from flywheel.evals.runs import import_results
from flywheel.evals.versions import current_version, version_rows
from flywheel.store.db import open_db
from tests.conftest import jsonl, trace

LEAD = User("ana", "lead")
PLAN = 'name = "cycle-test"\nseed = 3\ncap = 30\n\n[random]\nrate = 0.5\n'


@pytest.fixture
def plan(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text(PLAN)
    return path


def _cycle(db_path, plan, *extra) -> int:
    return main(["cycle", "--db", str(db_path), "--plan", str(plan), "--json", *extra])


def test_a_cycle_on_a_new_database_ingests_each_inbox_file_once_and_exits_0(tmp_path, plan, capsys):
    db_path = tmp_path / "flywheel.db"
    open_db(db_path).close()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    jsonl(inbox / "monday.jsonl", [trace(n) for n in range(80)])

    assert _cycle(db_path, plan, "--inbox", str(inbox)) == 0
    first = json.loads(capsys.readouterr().out)
    steps = first["steps"]
    assert (steps["ingest"]["status"], steps["ingest"]["files"], steps["ingest"]["ingested"]) == (
        "done",
        1,
        80,
    )
    assert steps["sample"]["status"] == "done" and steps["sample"]["sampled"] > 0
    assert steps["drift"]["status"] == "skipped" and "no eval set" in steps["drift"]["detail"]
    assert steps["fold_in"]["status"] == "skipped" and steps["gate"]["status"] == "skipped"
    assert first["attention"] == [] and first["exit_code"] == 0

    shutil.copy(inbox / "monday.jsonl", inbox / "renamed-copy.jsonl")  # same content: not new
    assert _cycle(db_path, plan, "--inbox", str(inbox)) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["steps"]["ingest"]["status"] == "skipped"
    assert second["steps"]["sample"]["repeated"] is True
    assert second["steps"]["sample"]["batch_id"] == steps["sample"]["batch_id"]
    db = open_db(db_path)
    assert db["traces"].count == 80 and db["sample_batches"].count == 1
    assert [c["status"] for c in cycles(db)] == ["finished", "finished"]
    assert new_inbox_files(db, inbox) == []


def test_bad_arguments_exit_2_with_one_line(tmp_path, plan, capsys):
    db_path = tmp_path / "flywheel.db"
    open_db(db_path).close()
    assert _cycle(db_path, plan, "--inbox", str(tmp_path / "missing")) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert _cycle(db_path, tmp_path / "no-plan.toml") == 2
    assert _cycle(tmp_path / "no.db", plan) == 2
    assert cycles(open_db(db_path)) == []  # refused before any step ran


def test_a_challenger_that_regresses_blocks_the_cycle_with_exit_1(demo_copy, plan, capsys):
    db = open_db(demo_copy)
    set_cycle_settings(db, LEAD, fold_in=True, baseline=DEMO_SYSTEMS[1])
    assert _cycle(demo_copy, plan) in (0, 1)  # the first cycle folds in what the demo left unfolded
    first = json.loads(capsys.readouterr().out)
    assert first["steps"]["fold_in"]["status"] in ("done", "skipped")
    assert first["steps"]["gate"]["status"] == "skipped"
    version = current_version(db)
    rows = [r["id"] for r in version_rows(db, version)]
    passing = "".join(json.dumps({"row_id": r, "passed": True}) + "\n" for r in rows).encode()
    import_results(db, LEAD, version, DEMO_SYSTEMS[1], passing, "baseline.jsonl")
    failing = "".join(json.dumps({"row_id": r, "passed": i != 0}) + "\n" for i, r in enumerate(rows))
    import_results(db, LEAD, version, "candidate", failing.encode(), "candidate.jsonl")

    assert _cycle(demo_copy, plan) == 1
    report = json.loads(capsys.readouterr().out)
    gate = report["steps"]["gate"]
    assert (gate["status"], gate["verdict"], gate["regressions"]) == ("done", "block", [rows[0]])
    assert any(reason.startswith("release gate blocks") for reason in report["attention"])
    assert report["steps"]["fold_in"]["status"] == "skipped"  # nothing new labeled since the last fold

    assert _cycle(demo_copy, plan) in (0, 1)  # the same results are not gated twice
    assert json.loads(capsys.readouterr().out)["steps"]["gate"]["status"] == "skipped"


def test_only_a_lead_changes_the_cycle_settings(db):
    with pytest.raises(PermissionDenied):
        set_cycle_settings(db, User("lena", "labeler"), fold_in=True, baseline="x")
    set_cycle_settings(db, LEAD, fold_in=True, baseline="  prod  ")
    assert (cycle_settings(db)["fold_in"], cycle_settings(db)["baseline"]) == (1, "prod")
    assert db["audit_log"].count_where("action = 'set_cycle_settings'") == 1
