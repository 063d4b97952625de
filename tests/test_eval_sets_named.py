"""Named eval sets: several lineages in one store, a frozen set that never changes, and --set."""

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from evalset_helpers import LEAD, add_traces, label, results_file

from flywheel.__main__ import main
from flywheel.errors import BadInput, NotFound
from flywheel.evals.runs import confirm_retirements, import_results, retirement_proposals
from flywheel.evals.versions import (
    create_eval_set,
    current_version,
    diff_versions,
    edit_row,
    eval_set_versions,
    eval_sets,
    fold_in,
    fold_preview,
    freeze_eval_set,
    import_evalset,
    resolve_set,
    version_rows,
    withdraw_row,
)
from flywheel.store.db import open_db
from flywheel.store.migrations import migrations

SUITE = b'{"input": "Where is my card?", "criterion": "Gives the window."}\n{"input": "Fees?"}\n'
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _two_sets(db):
    """``regression`` (v1, frozen) and ``quality`` (v2, refreshed)."""
    create_eval_set(db, LEAD, "regression", note="never changes")
    import_evalset(db, LEAD, SUITE, "suite.jsonl", now=T0, eval_set="regression")
    freeze_eval_set(db, LEAD, "regression")
    create_eval_set(db, LEAD, "quality")
    import_evalset(db, LEAD, SUITE, "suite.jsonl", now=T0, eval_set="quality")


def test_the_first_version_starts_a_default_set_and_every_command_works_without_a_set(db, tmp_path):
    import_evalset(db, LEAD, SUITE, "suite.jsonl")
    assert [(s["name"], s["frozen"], s["current"]) for s in eval_sets(db)] == [("default", 0, 1)]
    assert resolve_set(db, None) == "default"
    path = str(tmp_path / "flywheel.db")
    out = tmp_path / "rows.jsonl"
    assert main(["export", "--db", path, "--version", "1", "--format", "jsonl", "--out", str(out)]) == 0
    assert [json.loads(line)["eval_set"] for line in out.read_text().splitlines()] == ["default"] * 2


def test_a_store_from_before_named_sets_migrates_into_one_default_set(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    from sqlite_utils import Database

    old = Database(conn)
    migrations.apply(old, stop_before="m230_named_eval_sets_coverage_and_checks")
    old["eval_rows"].insert(
        {"id": "r-000001", "input": "hi", "source": "import", "adversarial": 0, "content_hash": "h"}
        | {"created_at": "2026-01-01T00:00:00Z"}
    )
    old["eval_versions"].insert(
        {"version": 1, "kind": "import", "created_by": "ana", "created_at": "2026-01-01T00:00:00Z", "rows": 1}
    )
    old["eval_version_rows"].insert({"version": 1, "row_id": "r-000001", "state": "active"})
    conn.close()

    db = open_db(path)
    assert [(s["name"], s["current"], s["versions"]) for s in eval_sets(db)] == [("default", 1, 1)]
    assert eval_set_versions(db, "default")[0]["eval_set"] == "default"
    assert db.execute("SELECT eval_set FROM eval_rows").fetchone()[0] == "default"
    import_evalset(db, LEAD, SUITE, "suite.jsonl")  # the old lineage goes on
    assert current_version(db, "default") == 2


def test_each_set_has_its_own_versions_numbered_across_the_store(db):
    _two_sets(db)
    assert [v["version"] for v in eval_set_versions(db, "regression")] == [1]
    assert [v["version"] for v in eval_set_versions(db, "quality")] == [2]
    import_evalset(db, LEAD, b'{"input": "More?"}\n', "more.jsonl", eval_set="quality")
    assert [v["version"] for v in eval_set_versions(db, "quality")] == [3, 2]
    # quality's v3 carries quality's rows, never regression's
    assert [r["id"] for r in version_rows(db, 3)] == ["r-000003", "r-000004", "r-000005"]
    assert current_version(db, "regression") == 1
    assert current_version(db) == 3  # without a set: the newest version of a set that is not frozen
    with pytest.raises(BadInput, match="different eval sets"):
        diff_versions(db, 1, 3)


# name given, sets in the store -> the set, or the error's words
RESOLVE = [
    ("quality", ["quality", "regression"], "quality"),
    (None, ["quality"], "quality"),
    (None, [], None),
    ("nope", ["quality", "regression"], "no eval set 'nope'; the sets are: quality, regression"),
    ("nope", [], "no eval set 'nope'; the sets are: none yet"),
    (None, ["quality", "regression"], "2 eval sets (quality, regression): name one with --set"),
]


@pytest.mark.parametrize(("name", "sets", "expected"), RESOLVE)
def test_which_set_a_command_acts_on(db, name, sets, expected):
    for each in sets:
        create_eval_set(db, LEAD, each)
    if expected is None or expected in sets:
        assert resolve_set(db, name) == expected
        return
    with pytest.raises((BadInput, NotFound)) as error:
        resolve_set(db, name)
    assert expected in str(error.value)


@pytest.mark.parametrize("name", ["", "Quality", "-x", "a b", "x" * 41, "qualité"])
def test_a_bad_set_name_is_refused(db, name):
    with pytest.raises(BadInput, match="eval set name"):
        create_eval_set(db, LEAD, name)


def test_a_set_cannot_be_created_twice_nor_frozen_empty_or_twice(db):
    create_eval_set(db, LEAD, "regression")
    with pytest.raises(BadInput, match="already exists"):
        create_eval_set(db, LEAD, "regression")
    with pytest.raises(BadInput, match="no version yet"):
        freeze_eval_set(db, LEAD, "regression")
    import_evalset(db, LEAD, SUITE, "suite.jsonl", eval_set="regression")
    freeze_eval_set(db, LEAD, "regression")
    with pytest.raises(BadInput, match="frozen already"):
        freeze_eval_set(db, LEAD, "regression")


def _snapshot(db, eval_set):
    return [
        (
            v["version"],
            [(r["id"], r["state"], r["content_hash"]) for r in version_rows(db, v["version"], True)],
        )
        for v in eval_set_versions(db, eval_set)
    ]


def test_a_frozen_set_refuses_every_change_and_never_retires(db):
    _two_sets(db)
    ids = add_traces(db, 2)
    label(db, ids[0], "lena")
    before = _snapshot(db, "regression")
    attempts = {
        "fold-in": lambda: fold_in(db, LEAD, eval_set="regression"),
        "preview": lambda: fold_preview(db, eval_set="regression"),
        "import": lambda: import_evalset(db, LEAD, SUITE, "more.jsonl", eval_set="regression"),
        "withdraw": lambda: withdraw_row(db, LEAD, "r-000001", "stale"),
        "edit": lambda: edit_row(db, LEAD, "r-000002", expected="Something else."),
    }
    for what, attempt in attempts.items():
        with pytest.raises(BadInput, match="'regression' is frozen") as error:
            attempt()
        assert "frozen" in str(error.value), what
    # two months of passing results: quality's rows are proposed, regression's never
    for week in range(10):
        moment = T0 + timedelta(weeks=week)
        for version in (1, 2):
            rows = [r["id"] for r in version_rows(db, version)]
            data = results_file(None, dict.fromkeys(rows, True))
            import_results(db, LEAD, version, "bot", data, "r.jsonl", now=moment)
    later = T0 + timedelta(weeks=10)
    assert retirement_proposals(db, now=later, eval_set="regression", months=2) == []
    assert [p["row_id"] for p in retirement_proposals(db, now=later, eval_set="quality", months=2)] == [
        "r-000003",
        "r-000004",
    ]
    with pytest.raises(BadInput, match="'regression' is frozen: nothing in it retires"):
        confirm_retirements(db, LEAD, ["r-000001"], now=later, months=2)
    # the database itself refuses a version of a frozen set and an unfreeze
    with pytest.raises(sqlite3.IntegrityError, match="frozen eval set takes no new version"):
        db["eval_versions"].insert(
            {"version": 9, "eval_set": "regression", "kind": "x", "created_by": "x", "created_at": "x"}
        )
    with pytest.raises(sqlite3.IntegrityError, match="stays frozen"):
        db.execute("UPDATE eval_sets SET frozen = 0 WHERE name = 'regression'")
    assert _snapshot(db, "regression") == before
    # the refreshed set takes the fold without naming it: it is the only set that is not frozen
    change = fold_in(db, LEAD)
    assert (change.version, eval_set_versions(db, "quality")[0]["version"]) == (3, 3)


def test_a_row_is_withdrawn_only_through_its_own_set(db):
    _two_sets(db)
    with pytest.raises(BadInput, match="belongs to eval set 'quality', not 'regression'"):
        withdraw_row(db, LEAD, "r-000003", "stale", eval_set="regression")
    assert withdraw_row(db, LEAD, "r-000003", "stale", eval_set="quality").version == 3


def _cli(path, *args):
    return main([args[0], "--db", str(path), *args[1:]])


def test_the_cli_asks_for_a_set_when_there_are_several(db, tmp_path, capsys):
    _two_sets(db)
    path = tmp_path / "flywheel.db"
    out = str(tmp_path / "rows.jsonl")
    commands = [
        ("export", "--version", "2", "--format", "jsonl", "--out", out),
        ("fold-in", "--preview"),
        ("diff", "1", "1"),
        ("withdraw", "r-000003", "--reason", "stale"),
        ("import-evalset", str(tmp_path / "none.jsonl")),
        ("gate", "--version", "2", "--baseline", "a", "--challenger", "b"),
    ]
    for command in commands:
        assert _cli(path, *command) == 2, command
        err = capsys.readouterr().err
        assert "2 eval sets (quality, regression): name one with --set" in err, (command, err)
        assert err.count("\n") == 1
    assert _cli(path, "export", "--set", "quality", "--version", "2", "--format", "jsonl", "--out", out) == 0
    assert _cli(path, "export", "--set", "quality", "--version", "1", "--format", "jsonl", "--out", out) == 2
    assert "version 1 belongs to eval set 'regression', not 'quality'" in capsys.readouterr().err
    assert _cli(path, "export", "--set", "qualty", "--version", "2", "--format", "jsonl", "--out", out) == 2
    assert "no eval set 'qualty'; the sets are: quality, regression" in capsys.readouterr().err
    assert _cli(path, "fold-in", "--set", "regression") == 2
    assert "'regression' is frozen" in capsys.readouterr().err


def test_the_eval_sets_command_lists_creates_and_freezes(db, tmp_path, capsys):
    path = tmp_path / "flywheel.db"
    assert _cli(path, "eval-sets", "--create", "regression", "--note", "fixed") == 0
    capsys.readouterr()
    suite = tmp_path / "suite.jsonl"
    suite.write_bytes(SUITE)
    assert _cli(path, "import-evalset", "--set", "regression", str(suite), "--json") == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1
    assert _cli(path, "eval-sets", "--freeze", "regression", "--json") == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["name"], listed["frozen"], listed["current"], listed["note"]) == (
        "regression",
        1,
        1,
        "fixed",
    )
    audit = [r[0] for r in db.execute("SELECT action FROM audit_log WHERE entity = 'eval_set' ORDER BY id")]
    assert audit == ["create_eval_set", "freeze_eval_set"]


def test_a_store_whose_every_set_is_frozen_says_so_when_asked_to_fold(db):
    create_eval_set(db, LEAD, "regression")
    import_evalset(db, LEAD, SUITE, "suite.jsonl", eval_set="regression")
    freeze_eval_set(db, LEAD, "regression")
    with pytest.raises(BadInput, match=r"every eval set is frozen \(regression\): create a set"):
        fold_in(db, LEAD)
