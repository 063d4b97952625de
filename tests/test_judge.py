import json
import os
import signal
import subprocess
import sys
import time

import pytest

from flywheel.__main__ import main
from flywheel.errors import JudgeError, NotFound
from flywheel.online import judge
from flywheel.online.judge import Target, load_judge_settings, make_client, run_judge
from flywheel.store.db import open_db, query_rows
from tests.fake_anthropic import FakeAnthropic
from tests.judge_data import NAMES, add_traces, raw_input, raw_output, starter_rubric

SETTINGS = load_judge_settings({}).replace(model="fake-judge", max_retries=2, concurrency=3, timeout_s=5)


@pytest.fixture
def fake():
    with FakeAnthropic() as server:
        yield server


def _client(fake, settings=SETTINGS):
    return make_client(settings, api_key="test-key", base_url=fake.url)


def _judgments(db):
    return query_rows(db, "SELECT * FROM judgments ORDER BY subject_id, position")


def test_valid_verdicts_are_stored_with_rubric_model_hash_tokens_and_cost(db, fake):
    add_traces(db, 6)
    rubric = starter_rubric(db)
    report = run_judge(db, "ana", Target("week", "2026-W45"), client=_client(fake), settings=SETTINGS)
    assert (report.judged, report.errors, report.failed, report.status) == (6, 0, 0, "finished")
    rows = _judgments(db)
    assert [r["verdict"] for r in rows] == ["fail" if n % 3 == 0 else "pass" for n in range(6)]
    assert {r["rubric_id"] for r in rows} == {rubric.id}
    assert {r["model"] for r in rows} == {"fake-judge"}
    assert all(len(r["prompt_hash"]) == 16 for r in rows)
    assert {(r["input_tokens"], r["output_tokens"]) for r in rows} == {(100, 20)}
    assert report.input_tokens == 600 and report.output_tokens == 120
    assert report.cost_usd == pytest.approx(6 * (100 * 3 + 20 * 15) / 1e6)
    run = db["judge_runs"].get(report.run_id)
    assert (run["judged"], run["status"], run["cost_usd"]) == (6, "finished", pytest.approx(report.cost_usd))
    assert json.loads(rows[0]["metrics"]) == {"resolution": "fail", "safety": "fail"}


def test_no_request_body_contains_raw_text_of_the_graded_traces(db, fake):
    ids = add_traces(db, 8, metadata=lambda n: {"shadow_reply": f"Dear {NAMES[n % 4]}, cards take a week."})
    starter_rubric(db)
    run_judge(db, "ana", Target("week", "2026-W45"), client=_client(fake), settings=SETTINGS)
    run_judge(db, "ana", Target("shadow", "shadow_reply"), client=_client(fake), settings=SETTINGS)
    assert len(fake.bodies) == 8 + 16
    assert any("[PERSON]" in body for body in fake.bodies)
    for n in range(len(ids)):
        secrets = [raw_input(n), raw_output(n), NAMES[n % 4], f"person{n}@example.org"]
        for body in fake.bodies:
            text = json.loads(body)["messages"][0]["content"] + json.loads(body)["system"]
            assert not any(secret in text for secret in secrets), f"raw text of trace {n} was sent"


def test_traces_without_an_approved_scrub_are_never_sent(db, fake):
    add_traces(db, 5, approved=2)
    starter_rubric(db)
    report = run_judge(db, "ana", Target("week", "2026-W45"), client=_client(fake), settings=SETTINGS)
    assert (report.judged, report.not_scrubbed, len(fake.bodies)) == (2, 3, 2)


def test_a_malformed_answer_is_retried_then_recorded_as_an_error(db, fake):
    add_traces(db, 2)
    starter_rubric(db)
    fake.script.extend(["malformed", "bad_verdict", "malformed"])  # the first trace, all three tries
    settings = SETTINGS.replace(concurrency=1)
    report = run_judge(
        db, "ana", Target("week", "2026-W45"), client=_client(fake, settings), settings=settings
    )
    first, second = _judgments(db)
    assert (first["status"], first["verdict"], first["attempts"]) == ("error", None, 3)
    assert "malformed answer after 3 attempts" in first["error"]
    assert (second["status"], second["attempts"]) == ("ok", 1)
    assert (report.errors, report.judged, first["input_tokens"]) == (1, 1, 300)


def test_one_malformed_answer_then_a_valid_one_is_stored(db, fake):
    add_traces(db, 1)
    starter_rubric(db)
    fake.script.append("malformed")
    run_judge(db, "ana", Target("week", "2026-W45"), client=_client(fake), settings=SETTINGS)
    (row,) = _judgments(db)
    assert (row["status"], row["verdict"], row["attempts"]) == ("ok", "fail", 2)


def test_429_waits_for_retry_after_and_529_and_500_are_retried(db, fake):
    add_traces(db, 1)
    starter_rubric(db)
    fake.script.extend(["429", "529", "500"])
    settings = SETTINGS.replace(max_retries=3)
    run_judge(db, "ana", Target("week", "2026-W45"), client=_client(fake, settings), settings=settings)
    assert [mode for _, mode in fake.times] == ["429", "529", "500", "valid"]
    assert fake.times[1][0] - fake.times[0][0] >= 0.95  # retry-after: 1
    assert _judgments(db)[0]["status"] == "ok"


def test_a_request_that_keeps_failing_stays_ungraded_and_the_next_run_grades_it(db, fake):
    add_traces(db, 1)
    starter_rubric(db)
    fake.script.extend(["500", "500"])
    settings = SETTINGS.replace(max_retries=1)
    report = run_judge(
        db, "ana", Target("week", "2026-W45"), client=_client(fake, settings), settings=settings
    )
    assert (report.failed, report.judged, _judgments(db)) == (1, 0, [])
    again = run_judge(
        db, "ana", Target("week", "2026-W45"), client=_client(fake, settings), settings=settings
    )
    assert (again.judged, len(_judgments(db))) == (1, 1)


def test_a_slow_answer_times_out_and_is_asked_again(db, fake):
    add_traces(db, 1)
    starter_rubric(db)
    fake.script.append("slow")
    settings = SETTINGS.replace(timeout_s=1, max_retries=1)
    report = run_judge(
        db, "ana", Target("week", "2026-W45"), client=_client(fake, settings), settings=settings
    )
    assert report.judged == 1 and len(fake.bodies) == 2


def test_concurrency_is_bounded(db):
    add_traces(db, 9)
    starter_rubric(db)
    with FakeAnthropic(delay=0.15) as fake:
        settings = SETTINGS.replace(concurrency=3)
        run_judge(db, "ana", Target("week", "2026-W45"), client=_client(fake, settings), settings=settings)
    assert 2 <= fake.max_in_flight <= 3


def test_a_second_run_grades_nothing_twice_and_limit_caps_a_run(db, fake):
    add_traces(db, 5)
    starter_rubric(db)
    first = run_judge(db, "ana", Target("week", "2026-W45"), limit=2, client=_client(fake), settings=SETTINGS)
    second = run_judge(db, "ana", Target("week", "2026-W45"), client=_client(fake), settings=SETTINGS)
    assert (first.judged, second.judged, second.already_judged) == (2, 3, 2)
    assert len(fake.bodies) == 5 and len(_judgments(db)) == 5


@pytest.mark.slow
def test_killed_run_resumes_without_loss_or_duplicates(tmp_path):
    path = tmp_path / "kill.db"
    db = open_db(path)
    ids = add_traces(db, 24)
    starter_rubric(db)
    db.close()
    env = {**os.environ, "ANTHROPIC_API_KEY": "test-key", "FLYWHEEL_JUDGE_CONCURRENCY": "2"}
    command = [sys.executable, "-m", "flywheel", "judge", "--db", str(path), "--week", "2026-W45", "--json"]
    with FakeAnthropic(delay=0.2) as fake:
        env["ANTHROPIC_BASE_URL"] = fake.url  # the SDK's own variable: a gateway can sit in front
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        db = open_db(path)
        deadline = time.monotonic() + 30
        while db.execute("SELECT count(*) FROM judgments").fetchone()[0] < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_at = db.execute("SELECT count(*) FROM judgments").fetchone()[0]
        assert 5 <= killed_at < 24
        fake.delay = 0
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["already_judged"] == killed_at and report["judged"] == 24 - killed_at
    rows = db.execute("SELECT subject_id, count(*) FROM judgments GROUP BY subject_id").fetchall()
    assert sorted(r[0] for r in rows) == ids and {r[1] for r in rows} == {1}


def test_grading_a_regression_run_fills_its_missing_verdicts(db, fake, tmp_path, monkeypatch, capsys):
    starter_rubric(db)
    db["eval_versions"].insert({"version": 1, "kind": "fold_in", "created_by": "ana", "created_at": "x"})
    for i in range(3):
        db["eval_rows"].insert(
            {
                "id": f"r{i}",
                "input": f"question {i}",
                "source": "test",
                "adversarial": 0,
                "content_hash": f"h{i}",
                "created_at": "x",
                "expected": "a helpful answer",
            }
        )
    db["eval_runs"].insert({"id": 1, "version": 1, "system": "v2", "imported_by": "ana", "imported_at": "x"})
    results = [("r0", None, "FAILME wrong"), ("r1", None, "fine answer"), ("r2", 1, "already graded")]
    for row_id, passed, output in results:
        db["eval_results"].insert(
            {"run_id": 1, "row_id": row_id, "repeat": 0, "passed": passed, "output": output}
        )
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
    monkeypatch.setenv("FLYWHEEL_JUDGE_MODEL", "fake-judge")
    assert main(["judge", "--db", str(tmp_path / "flywheel.db"), "--run", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["judged"] == 2
    rows = query_rows(db, "SELECT row_id, passed, score, graded_by FROM eval_results ORDER BY row_id")
    assert [(r["row_id"], r["passed"]) for r in rows] == [("r0", 0), ("r1", 1), ("r2", 1)]
    assert rows[0]["graded_by"] == "judge:support-reply v1:fake-judge" and rows[2]["graded_by"] is None
    assert "<expected>\na helpful answer" in json.loads(fake.bodies[0])["messages"][0]["content"]


def test_without_a_key_the_judge_says_how_to_enable_it(db, monkeypatch, tmp_path, capsys):
    for name in [n for n in os.environ if n.startswith("ANTHROPIC_")]:
        monkeypatch.delenv(name)
    assert not judge.api_configured()
    with pytest.raises(JudgeError, match="ANTHROPIC_API_KEY"):
        make_client(SETTINGS)
    path = tmp_path / "nokey.db"
    db2 = open_db(path)
    add_traces(db2, 1)
    starter_rubric(db2)
    db2.close()
    assert main(["judge", "--db", str(path), "--week", "2026-W45"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("flywheel judge: ") and "ANTHROPIC_API_KEY" in err
    assert open_db(path).execute("SELECT count(*) FROM judgments").fetchone()[0] == 0


def test_unknown_rubric_target_and_bad_settings_are_named(db, fake):
    add_traces(db, 1)
    with pytest.raises(NotFound, match="no rubric yet"):
        run_judge(db, "ana", Target("week", "2026-W45"), client=_client(fake), settings=SETTINGS)
    starter_rubric(db)
    with pytest.raises(NotFound, match="no rubric 'nope'"):
        run_judge(db, "ana", Target("week", "2026-W45"), "nope", client=_client(fake), settings=SETTINGS)
    with pytest.raises(NotFound, match="2026-W01"):
        run_judge(db, "ana", Target("week", "2026-W01"), client=_client(fake), settings=SETTINGS)
    with pytest.raises(Exception, match="FLYWHEEL_JUDGE_CONCURRENCY='0'"):
        load_judge_settings({"FLYWHEEL_JUDGE_CONCURRENCY": "0"})
    assert load_judge_settings({"FLYWHEEL_JUDGE_MODEL": "claude-x"}).model == "claude-x"
