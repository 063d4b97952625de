"""Lead pages in use: focus never traps the review shortcuts, removed redactions leave the picker, an
import names its conflicting traces, the gate shows flipped rows whole, drift says its alarm in a sentence
and sends a cluster once, parity starts on the newest version and the live system."""

import json

import pytest
from conftest import jsonl, trace
from evalset_helpers import LEAD
from pages_support import app, open_page

from flywheel.__main__ import main
from flywheel.auth import User
from flywheel.config import load_config
from flywheel.drift import run as drift
from flywheel.evals.runs import gate, import_results, live_system, record_decision
from flywheel.evals.versions import current_version, import_evalset
from flywheel.ingest.run import conflicting_traces, ingest_files
from flywheel.online import parity
from flywheel.review.scrubs import scrub_traces
from flywheel.store.db import open_db
from pages._ui import md

ANA = User("ana", "lead")

PICKER = "Redactions to remove or reclassify"


@pytest.fixture
def review_db(tmp_path):
    path = tmp_path / "r.db"
    db = open_db(path)
    text = "I'm Maria Gonzalez, call 07700 900123 about the kettle lane branch"
    items = [trace(1, input=text, output="ok")]
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", items)], config=load_config())
    scrub_traces(db, ["t-000001"], actor="ana")
    return path


def test_review_page_installs_the_shortcut_guard(review_db, monkeypatch):
    at = open_page(app(review_db, monkeypatch, "ravi"), "pages/review.py")
    guard = [h.value for h in at.html if "flywheelReviewGuard" in h.value]
    assert len(guard) == 1
    assert '"Escape"' in guard[0] and "[role=option]" in guard[0]


def test_a_removed_redaction_leaves_the_picker_under_a_new_key(review_db, monkeypatch):
    at = open_page(app(review_db, monkeypatch, "ravi"), "pages/review.py")
    before = next(m for m in at.multiselect if m.label == PICKER)
    table = at.dataframe[0].value
    unverified = table[~table["label"].isin(["EMAIL", "PHONE", "CARD", "IBAN"])]
    gone = int(unverified.iloc[0]["id"])
    before.set_value([gone]).run()
    next(b for b in at.button if b.label == "Remove 1 selected redaction(s)").click().run()
    assert not at.error
    after = next(m for m in at.multiselect if m.label == PICKER)
    assert after.key != before.key
    assert after.value == [] and len(after.options) == len(table) - 1
    assert not [o for o in after.options if o.startswith(f"#{gone} ")], after.options


@pytest.fixture
def conflict_db(tmp_path):
    path = tmp_path / "c.db"
    db = open_db(path)
    ingest_files(db, [jsonl(tmp_path / "a.jsonl", [trace(1), trace(2), trace(3)])], config=load_config())
    odd_id = "t-000002 <b>*[x](http://evil)*</b>"
    second = [
        trace(1, input="edited"),
        trace(2),
        trace(3, input="edited too"),
        {**trace(4), "trace_id": odd_id},
    ]
    ingest_files(db, [jsonl(tmp_path / "b.jsonl", second)], config=load_config())
    ingest_files(
        db,
        [jsonl(tmp_path / "c.jsonl", [{**trace(4, input="other"), "trace_id": odd_id}])],
        config=load_config(),
    )
    return path


def test_an_import_report_names_each_conflicting_trace(tmp_path, db):
    first = ingest_files(db, [jsonl(tmp_path / "a.jsonl", [trace(1), trace(2)])], config=load_config())
    assert first.conflicts == []
    again = ingest_files(
        db,
        [jsonl(tmp_path / "b.jsonl", [trace(2), trace(1, input="edited"), trace(2, input="x")])],
        config=load_config(),
    )
    file = "b.jsonl"
    expected = [
        {"file": file, "line": 2, "trace_id": "t-000001"},
        {"file": file, "line": 3, "trace_id": "t-000002"},
    ]
    assert again.conflicts == expected and again.changed == 2
    assert conflicting_traces(db, again.run_id) == expected
    assert conflicting_traces(db, first.run_id) == []


def test_the_cli_text_report_lists_conflicts_and_the_json_keeps_its_keys(tmp_path, capsys):
    path = str(tmp_path / "c.db")
    assert main(["ingest", "--db", path, str(jsonl(tmp_path / "a.jsonl", [trace(1)]))]) == 0
    capsys.readouterr()
    changed = str(jsonl(tmp_path / "b.jsonl", [trace(1, input="edited")]))
    assert main(["ingest", "--db", path, changed]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "conflict: b.jsonl line 1: trace 't-000001' differs from the stored one"
    assert main(["ingest", "--db", path, changed, "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {
        "run_id",
        "lines_read",
        "ingested",
        "duplicates",
        "quarantined",
    }


def test_the_import_page_lists_conflicting_trace_ids_literally(conflict_db, monkeypatch):
    at = open_page(app(conflict_db, monkeypatch), "pages/ingest.py")
    runs = next(s for s in at.selectbox if s.label.startswith("Quarantine"))
    runs.select(2).run()
    tables = [d.value for d in at.dataframe if "trace_id" in d.value.columns]
    assert len(tables) == 1
    assert list(tables[0]["trace_id"]) == ["t-000001", "t-000003"]
    assert list(tables[0]["line"].astype(int)) == [1, 3]
    runs.select(3).run()
    tables = [d.value for d in at.dataframe if "trace_id" in d.value.columns]
    assert list(tables[0]["trace_id"]) == ["t-000002 <b>*[x](http://evil)*</b>"]
    runs.select(1).run()
    assert not [d for d in at.dataframe if "trace_id" in d.value.columns]


LONG = "# not a heading\n\n[1]: http://example.com/x $x$ " + "word " * 300 + "end."


def _gate_db(path):
    db = open_db(path)
    rows = [
        {
            "id": f"q{n}",
            "input": f"question {n} " + LONG,
            "expected": f"expected {n} " + LONG,
            "code": "A",
            "adversarial": n == 3,
        }
        for n in range(1, 4)
    ]
    import_evalset(db, LEAD, "\n".join(json.dumps(r) for r in rows).encode() + b"\n", "suite.jsonl")

    def results(outcomes, who):
        lines = [
            {"row_id": f"r-{n:06d}", "passed": ok, "output": f"{who} answer {n} " + LONG}
            for n, ok in enumerate(outcomes, 1)
        ]
        return "\n".join(json.dumps(line) for line in lines).encode() + b"\n"

    import_results(db, LEAD, 1, "base", results([True, False, True], "base"), "base.jsonl")
    import_results(db, LEAD, 1, "new", results([False, True, True], "new"), "new.jsonl")
    return path


def test_the_gate_shows_each_flipped_row_whole_side_by_side(tmp_path, monkeypatch):
    at = app(_gate_db(tmp_path / "g.db"), monkeypatch)
    at.switch_page("pages/gate.py").run()
    assert not at.exception and at.error[0].value.startswith("**BLOCK**")
    labels = [e.label for e in at.expander]
    assert any(label.startswith("r\\-000001 · pass→fail · blocks") for label in labels), labels
    assert any(label.startswith("r\\-000002 · fail→pass") for label in labels), labels
    texts = [t.value for t in at.text]
    for n, who in ((1, "base"), (1, "new"), (2, "base"), (2, "new")):
        assert f"{who} answer {n} " + LONG in texts, (who, n)
    for n in (1, 2):
        assert f"question {n} " + LONG in texts and f"expected {n} " + LONG in texts
    assert not any("answer 3" in t for t in texts)  # a row that did not flip is not shown
    table = next(d.value for d in at.dataframe if "flip" in d.value.columns)
    assert list(table["row_id"]) == ["r-000001", "r-000002"] and "input" not in table.columns


def test_the_drift_page_says_its_verdict_in_a_sentence_with_the_statistics_a_click_away(
    demo_copy, monkeypatch
):
    last = drift.drift_series(open_db(demo_copy))[-1]
    at = open_page(app(demo_copy, monkeypatch), "pages/drift.py")
    (banner,) = [w for w in at.warning if w.value.startswith("**Alarm**")]  # the demo's last week alarms
    share, normal = f"{last['share_beyond']:.0%}", f"{last['ref_share']:.0%}"
    assert banner.value == (
        f"**Alarm**: In {md(last['window'])}, {share} of traffic is farther from every eval row than 80% of"
        f" covered traffic is (normally {normal}): the eval set does not cover what users now ask."
    )
    assert "τ" not in banner.value and "p =" not in banner.value
    (box,) = [e for e in at.expander if e.label == "The statistics behind it"]
    stats = box.markdown[0].value
    assert "τ =" in stats and "p =" in stats and f"{last['share_beyond']:.1%}" in stats
    (method,) = [c.value for c in box.caption]
    assert "reweighted" in method and "the smaller p, doubled" in method  # the method, one click away
    assert len([c for c in at.caption if "the smaller p, doubled" in c.value]) == 1, (
        "the method is out on the page"
    )


def test_a_week_without_alarm_says_so_in_the_same_sentence(demo_copy, monkeypatch):
    db = open_db(demo_copy)
    with db.conn:
        db.execute("UPDATE drift_windows SET alarm = 0")
    db.close()
    at = open_page(app(demo_copy, monkeypatch), "pages/drift.py")
    assert not [w for w in at.warning if w.value.startswith("**Alarm**")]
    assert at.success[0].value.startswith("No alarm: In ")
    assert "of traffic is farther from every eval row than 80% of covered traffic is (normally" in (
        at.success[0].value
    )
    assert "the eval set still covers what users ask." in at.success[0].value


def test_sending_the_same_clusters_twice_makes_one_batch(demo_copy):
    db = open_db(demo_copy)
    run = drift.latest_run(db)
    batches = db["sample_batches"].count
    first = drift.send_to_sampling(db, ANA, run["id"], clusters_sent=2)
    again = drift.send_to_sampling(db, ANA, run["id"], clusters_sent=2, per_cluster=3)
    assert not first.already_sent and again.already_sent
    assert (again.id, again.sampled, again.reasons) == (first.id, first.sampled, first.reasons)
    assert db["sample_batches"].count == batches + 1
    sends = "SELECT count(*) FROM audit_log WHERE action = 'sample' AND entity_id = ?"
    assert db.execute(sends, [str(first.id)]).fetchone()[0] == 1
    assert "already sent as batch" in again.summary()
    other = drift.send_to_sampling(db, ANA, run["id"], clusters_sent=3)  # a third cluster: a new batch
    assert not other.already_sent and other.id != first.id
    assert db["sample_batches"].count == batches + 2


def test_a_second_send_from_the_drift_page_makes_no_second_batch(demo_copy, monkeypatch):
    db = open_db(demo_copy)
    batches = db["sample_batches"].count
    at = open_page(app(demo_copy, monkeypatch), "pages/drift.py")
    at.button(key="FormSubmitter:send-Send to sampling").click().run()
    assert at.success[-1].value.startswith("Batch ")
    at.button(key="FormSubmitter:send-Send to sampling").click().run()
    assert not at.exception
    assert any(
        i.value.startswith("Already sent: these clusters of this run went out as batch") for i in at.info
    )
    assert db["sample_batches"].count == batches + 1


def test_parity_reads_the_newest_version_and_the_live_system(demo_copy, monkeypatch):
    db = open_db(demo_copy)
    live, newest = live_system(db), current_version(db)
    # the demo's frozen regression set holds the highest number; parity reads the refreshed set
    newest_of = "SELECT max(v.version) FROM eval_versions v JOIN eval_sets s ON s.name = v.eval_set WHERE "
    refreshed, frozen = newest_of + "NOT s.frozen", newest_of + "s.frozen"
    assert live is not None and newest == db.execute(refreshed).fetchone()[0]
    assert db.execute(frozen).fetchone()[0] > newest
    at = open_page(app(demo_copy, monkeypatch), "pages/online.py")
    lab = [c.value for c in at.caption if c.value.startswith("Lab: the live system")]
    assert len(lab) == 1
    decision = f"(release decision {live['decision']})"
    assert lab[0].startswith(f"Lab: the live system {md(live['system'])} {decision} on eval-set v{newest}:")


def test_parity_has_no_lab_figure_until_a_system_ships_then_reads_it(tmp_path):
    db = open_db(_gate_db(tmp_path / "g.db"))
    assert parity.lab_pass_rate(db) is None
    assert "no live system" in parity.lab_missing(db)
    perfect = "\n".join(json.dumps({"row_id": f"r-{n:06d}", "passed": True}) for n in (1, 2, 3)) + "\n"
    import_results(db, LEAD, 1, "best", perfect.encode(), "best.jsonl")
    verdict = gate(db, 1, "new", "best", 0.0, default_adversarial_pct=90)
    assert verdict["verdict"] == "ship"
    record_decision(db, LEAD, verdict)
    lab = parity.lab_pass_rate(db)
    assert (lab["system"], lab["version"], lab["n"], lab["rate"]) == ("best", 1, 3, 1.0)
