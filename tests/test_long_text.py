"""Texts of any length: NER reads them in pieces with offsets kept, and one long trace fails no batch,
drift run or cycle (spaCy refuses a text past its ``max_length``)."""

import hashlib
import itertools
import json

import pytest
from conftest import jsonl, trace

from flywheel.config import load_config
from flywheel.cycle import run_cycle
from flywheel.drift import run as drift
from flywheel.errors import BadInput
from flywheel.ingest.run import ingest_files
from flywheel.review.scrubs import scrub_traces
from flywheel.sampling.plans import load_plan_file
from flywheel.scrub import Scrubber
from flywheel.scrub.ner import SpacyEntityDetector, load_pipeline, text_pieces
from flywheel.store.clock import now
from flywheel.store.db import open_db, query_rows, write

NAMES = ("Helena Schmidt", "Derek Novak", "Sari Paavolainen", "Tom Becker", "Maria Lopez")
FILLER = "the transfer did not arrive and the app keeps showing it as pending since yesterday. "


def long_text(paragraphs: int = 40) -> tuple[str, list[tuple[int, int]]]:
    """Paragraphs of uneven length, each naming a person (some behind a zero-width space, which the
    scrubber's normalised view drops); returns the text and where each name is."""
    parts, where, pos = [], [], 0
    for n in range(paragraphs):
        name = NAMES[n % len(NAMES)]
        head = FILLER * (1 + n % 4) + ("\u200b" if n % 3 == 0 else "") + "Yesterday "
        paragraph = f"{head}{name} called about the card.\n\n"
        where.append((pos + len(head), pos + len(head) + len(name)))
        parts.append(paragraph)
        pos += len(paragraph)
    return "".join(parts), where


def test_pieces_cover_the_text_in_order_and_end_at_breaks():
    text, _ = long_text()
    pieces = text_pieces(text, 1000)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(text) and len(pieces) > 5
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    assert all(0 < end - start <= 1000 for start, end in pieces)
    assert all(text[end - 2 : end] == "\n\n" for _, end in pieces[:-1])
    # no break at all: cut hard at the size, nothing lost
    assert text_pieces("x" * 2500, 1000) == [(0, 1000), (1000, 2000), (2000, 2500)]
    assert text_pieces("", 1000) == [(0, 0)] and text_pieces("short", 1000) == [(0, 5)]


def test_spacy_entities_in_pieces_keep_their_offsets_into_the_whole_text():
    text, where = long_text()
    whole = {(f.beg, f.end) for f in SpacyEntityDetector(piece_chars=100_000).iter_filth(text)}
    pieced = {(f.beg, f.end) for f in SpacyEntityDetector(piece_chars=1000).iter_filth(text)}
    assert len(text_pieces(text, 1000)) > 5
    found = [span for span in where if span in pieced]
    assert found == [span for span in where if span in whole]  # the same names as read in one piece
    assert len(found) >= len(where) * 0.8 and all(text[b:e] in NAMES for b, e in found)
    assert len(pieced ^ whole) <= 2, [text[b:e] for b, e in pieced ^ whole]


def test_the_scrubber_redacts_at_the_original_offsets_in_any_piece():
    text, where = long_text()
    result = Scrubber(piece_chars=1000).scrub(text)
    people = {(s.start, s.end) for s in result.spans if s.label == "PERSON"}
    assert set(where) <= people
    assert not any(name in result.text for name in NAMES)
    with pytest.raises(BadInput, match="piece_chars=10"):
        Scrubber(piece_chars=10)


def test_a_text_past_the_pipelines_max_length_is_read_in_pieces(monkeypatch):
    monkeypatch.setattr(load_pipeline(), "max_length", 2000)
    text, where = long_text()
    assert len(text) > 5 * 2000
    spans = {(s.start, s.end) for s in Scrubber().scrub(text).spans}
    assert set(where) <= spans


def test_a_text_past_spacys_real_limit_is_scrubbed():
    nlp = load_pipeline()
    assert nlp.max_length == 1_000_000
    # long words: few tokens, so the real limit is reached in seconds
    filler = "transactionsstillpendingsinceyesterday " * (nlp.max_length // 39 + 10)
    text = filler + "Hello, my name is Ana Lee.\n"
    assert len(text) > nlp.max_length
    filths = list(SpacyEntityDetector().iter_filth(text))
    start = text.index("Ana Lee")
    assert (start, start + len("Ana Lee")) in {(f.beg, f.end) for f in filths}


# Through the store: one long trace in a batch, a drift run and a cycle ------------------------------


@pytest.fixture
def small_limit(monkeypatch):
    """spaCy's own limit made small, so a few thousand characters are "too long" (as 1M+ are for real)."""
    monkeypatch.setattr(load_pipeline(), "max_length", 3000)


def long_trace_db(db, tmp_path, n: int = 30):
    text, _ = long_text()
    traces = [trace(i) for i in range(n)] + [
        trace(n, input=text, output="Ask Ana Lee again.", timestamp="2026-05-28T12:00:00Z")
    ]
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", traces)], actor="test", config=load_config())
    return f"t-{n:06d}"


def test_a_long_trace_is_scrubbed_with_its_batch_and_audited(db, tmp_path, small_limit):
    long_id = long_trace_db(db, tmp_path)
    ids = [r["trace_id"] for r in query_rows(db, "SELECT trace_id FROM traces")]
    assert scrub_traces(db, ids, "ana") == 31
    scrubbed = db.execute("SELECT input FROM scrubs WHERE trace_id = ?", [long_id]).fetchone()[0]
    assert not any(name in scrubbed for name in NAMES) and "[PERSON]" in scrubbed
    assert db.execute("SELECT count(*) FROM scrubs WHERE audit_id IS NULL").fetchone()[0] == 0


def test_a_trace_that_cannot_be_scrubbed_is_set_aside_and_the_rest_go_on(db, tmp_path):
    ingest_files(
        db, [jsonl(tmp_path / "t.jsonl", [trace(i) for i in range(5)])], actor="test", config=load_config()
    )
    with write(db):  # a stored conversation the scrubber cannot read
        db.execute("UPDATE traces SET messages = '[{\"role\": \"user\"}]' WHERE trace_id = 't-000002'")
    ids = [f"t-{i:06d}" for i in range(5)]
    assert scrub_traces(db, ids, "ana") == 4
    entry = query_rows(db, "SELECT detail FROM audit_log WHERE action = 'scrub'")[-1]
    assert json.loads(entry["detail"])["set_aside"] == {"t-000002": "cannot be scrubbed: KeyError"}
    assert scrub_traces(db, ids, "ana") == 0  # it stays aside on a retry; nothing is scrubbed twice
    assert db["scrubs"].count == 4


def add_eval_version(db, texts: list[str]) -> None:
    ids = [f"r-{i + 1:06d}" for i in range(len(texts))]
    with write(db):
        db["eval_versions"].insert(
            {"version": 1, "kind": "import", "created_by": "ana", "created_at": now(), "rows": len(texts)}
        )
        db["eval_rows"].insert_all(
            {
                "id": i,
                "input": t,
                "source": "import",
                "adversarial": 0,
                "content_hash": hashlib.sha256(t.encode()).hexdigest(),
                "created_at": now(),
            }
            for i, t in zip(ids, texts, strict=True)
        )
        db["eval_version_rows"].insert_all({"version": 1, "row_id": i, "state": "active"} for i in ids)


def bag_of_words(texts: list[str]):
    import numpy as np

    out = np.full((len(texts), 64), 1e-3, dtype=np.float32)
    for row, text in enumerate(texts):
        assert len(text) <= drift.ENCODE_CHARS
        for word in text.lower().split():
            out[row, int(hashlib.md5(word.encode()).hexdigest()[:4], 16) % 64] += 1
    return out


def test_a_long_trace_is_measured_by_drift(db, tmp_path, small_limit):
    text, _ = long_text()
    add_eval_version(db, [f"where is my card number {i}" for i in range(20)])
    traces = [
        trace(i, timestamp=f"2026-03-{2 + 7 * (i % 2):02d}T10:00:00Z", input=f"where is my card {i}")
        for i in range(80)
    ]
    traces.append(trace(80, timestamp="2026-03-09T11:00:00Z", input=text))
    ingest_files(db, [jsonl(tmp_path / "t.jsonl", traces)], actor="test", config=load_config())
    run = drift.run_drift(
        db, "ana", "2026-W11", model=drift.Model("bag", "1", bag_of_words), config=load_config()
    )
    assert run.as_json()[0]["n"] == 41
    stored = db.execute("SELECT text FROM drift_texts WHERE trace_id = 't-000080'").fetchone()[0]
    assert len(stored) > 3000 and not any(name in stored for name in NAMES)


def test_a_long_trace_fails_no_cycle(tmp_path, small_limit):
    db = open_db(tmp_path / "f.db")
    long_id = long_trace_db(db, tmp_path)
    plan = tmp_path / "plan.toml"
    plan.write_text('name = "all"\nseed = 1\n\n[random]\nrate = 1.0\n')
    report = run_cycle(db, load_plan_file(plan), "cycle", config=load_config())
    assert report.as_json()["steps"]["sample"]["status"] == "done", report.summary()
    assert db.execute("SELECT status FROM cycles").fetchone()[0] == "finished"
    assert db.execute("SELECT count(*) FROM scrubs WHERE trace_id = ?", [long_id]).fetchone()[0] == 1
