"""Result and suite CSV files never lose a row: each imports every row or is refused by a line number."""

import json
import re

import pytest
from evalset_helpers import LEAD
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel.__main__ import main
from flywheel.csvfiles import BadRows, read_table
from flywheel.errors import BadInput
from flywheel.evals.runs import import_results, parse_results
from flywheel.evals.versions import import_evalset, parse_suite
from flywheel.store.db import open_db

KNOWN = [f"r-{n:06d}" for n in range(1, 31)]
LINE = re.compile(r"line \d+")


def write_csv(header: list[str], rows: list[list[str]], ending: str = "\n") -> str:
    """RFC 4180 text; csv.writer would leave a lone CR unquoted under a "\n" line terminator."""

    def field(cell: str) -> str:
        return '"' + cell.replace('"', '""') + '"' if any(ch in cell for ch in ',"\r\n') else cell

    return "".join(",".join(map(field, row)) + ending for row in [header, *rows])


def test_the_issue_file_a_first_output_that_never_closes_its_quote(tmp_path, capsys):
    path = tmp_path / "g.db"
    db = open_db(path)
    suite = "\n".join(json.dumps({"input": f"q{n}"}) for n in range(430)) + "\n"
    import_evalset(db, LEAD, suite.encode(), "s.jsonl")
    db.close()
    rows = [f"r-{n:06d},1,fine" for n in range(2, 431)]
    results = tmp_path / "r.csv"
    results.write_text('row_id,passed,output\nr-000001,0,"it opens a quote\n' + "\n".join(rows) + "\n")
    args = ["import-results", "--db", str(path), "--version", "1", "--system", "s", str(results)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "line 2: quoted field opened on line 2 is not closed" in err and len(err.splitlines()) == 1
    assert open_db(path)["eval_results"].count == 0


def test_a_starter_suite_with_a_stray_quote_is_refused_whole(db):
    data = b'id,input\nq1,first\nq2,"second\nq3,third\nq4,fourth"\nq5,fifth\n'
    with pytest.raises(BadRows) as error:
        import_evalset(db, LEAD, data, "suite.csv")
    assert [line for line, _ in error.value.problems] == [4]  # q3 is swallowed; q4's quote is stray
    assert "stray quote swallowed it" in str(error.value)
    assert db["eval_rows"].count == 0


def test_a_swallowed_row_that_keeps_the_field_count_is_named_by_its_line(db):
    import_evalset(db, LEAD, "\n".join(json.dumps({"input": f"q{n}"}) for n in range(3)).encode(), "s.jsonl")
    data = b'row_id,passed,output\nr-000001,1,"ok\nr-000002,0,bad"\nr-000003,1,y\n'
    with pytest.raises(BadRows, match="line 3: reads as a row of its own"):
        import_results(db, LEAD, 1, "s", data, "r.csv")


def test_a_field_over_the_csv_modules_limit_is_one_line(tmp_path, capsys):
    path = tmp_path / "g.db"
    open_db(path).close()
    suite = tmp_path / "big.csv"
    suite.write_text("input,expected\n" + "x" * 200_000 + ",y\n")
    assert main(["import-evalset", "--db", str(path), str(suite)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "line 2" in err and "Traceback" not in err


def test_a_results_field_over_the_csv_modules_limit_is_one_line(tmp_path, capsys):
    path = tmp_path / "g.db"
    import_evalset(open_db(path), LEAD, b'{"input": "a"}\n', "s.jsonl")
    results = tmp_path / "big.csv"
    results.write_text("row_id,passed,output\nr-000001,1," + "x" * (128 * 1024 + 1) + "\n")
    args = ["import-results", "--db", str(path), "--version", "1", "--system", "s", str(results)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "line 2: field 'output'" in err and "Traceback" not in err
    assert open_db(path)["eval_results"].count == 0


@pytest.mark.parametrize("reader", [parse_results, parse_suite])
def test_results_and_suites_name_every_line_that_is_not_json(reader):
    with pytest.raises(BadRows) as error:
        reader(b'{"input": "a", "row_id": "r-000001", "passed": true}\n{oops\n\n[1,\n', "f.jsonl")
    problems = dict(error.value.problems)
    assert problems[2].startswith("not JSON") and problems[4].startswith("not JSON") and 3 not in problems


def test_imports_reconcile_read_stored_and_refused(db):
    import_evalset(db, LEAD, b'{"input": "a"}\n{"input": "b"}\n', "s.jsonl")
    data = b"row_id,passed\nr-000001,1\nr-000001,0\nr-000002,1\nr-999999,1\n"
    report = import_results(db, LEAD, 1, "s", data, "r.csv")
    assert (report.rows_read, report.stored, report.refused) == (4, 3, 1)
    assert report.unknown == ["r-999999"] and report.duplicates == ["r-000001"]
    assert "4 results read = 3 stored + 1 refused" in report.summary()
    with pytest.raises(BadRows, match="repeat 0 is already on line 2"):
        import_results(db, LEAD, 1, "s", b"row_id,passed,repeat\nr-000001,1,0\nr-000001,0,0\n", "r.csv")


# Fuzz: a well-formed file, then one fault -------------------------------------------------------------

cells = st.text(alphabet='ab ,"\n\r\u00e9', max_size=8)
FAULTS = ("none", "stray quote", "short record", "long record", "line break")


def _mutate(text: str, fault: str, data) -> str:
    lines = text.splitlines(keepends=True)
    if fault == "none":
        return text
    if fault == "stray quote":
        at = data.draw(st.integers(0, len(text)))
        return text[:at] + '"' + text[at:]
    if fault == "line break":
        at = data.draw(st.integers(0, len(text)))
        return text[:at] + data.draw(st.sampled_from(["\n", "\r\n", "\r"])) + text[at:]
    # short/long: cut or add a field on a record that starts on its own line
    plain = [i for i, line in enumerate(lines) if i > 0 and line.startswith("r-")]
    if not plain:
        return text
    i = data.draw(st.sampled_from(plain))
    body, end = lines[i].rstrip("\r\n"), lines[i][len(lines[i].rstrip("\r\n")) :]
    lines[i] = (body + ",extra" if fault == "long record" else body.rsplit(",", 1)[0]) + end
    return "".join(lines)


def _outcome(parse, text: str) -> int | None:
    """Rows imported, or None when refused with a line number (anything else fails the test)."""
    try:
        return parse(text)
    except BadInput as error:
        assert LINE.search(str(error)), str(error)
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(st.tuples(st.booleans(), cells), min_size=1, max_size=8),
    st.sampled_from(FAULTS),
    st.sampled_from(["\n", "\r\n", "mixed"]),
    st.booleans(),
    st.data(),
)
def test_a_results_file_imports_every_row_or_is_refused_with_a_line(rows, fault, ending, bom, data):
    records = [[KNOWN[i], "1" if passed else "0", out] for i, (passed, out) in enumerate(rows)]
    text = write_csv(["row_id", "passed", "output"], records, "\r\n" if ending == "\r\n" else "\n")
    if ending == "mixed":
        text = text.replace("0\n", "0\r\n").replace("1\n", "1\r")
    mutated = _mutate(text, fault, data)
    raw = (("\ufeff" if bom else "") + mutated).encode()
    imported = _outcome(lambda _: len(parse_results(raw, "r.csv", KNOWN)[1]), mutated)
    if fault == "none":
        assert imported == len(records)
    assert imported in (None, len(records))
    if imported is not None:
        found = parse_results(raw, "r.csv", KNOWN)[1]
        assert [r.row_id for r in found] == [r[0] for r in records]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(st.tuples(cells, cells), min_size=1, max_size=8),
    st.sampled_from(FAULTS),
    st.booleans(),
    st.data(),
)
def test_a_suite_file_imports_every_row_or_is_refused_with_a_line(rows, fault, bom, data):
    records = [[KNOWN[i], "input " + text, expected] for i, (text, expected) in enumerate(rows)]
    text = write_csv(["id", "input", "expected"], records)
    mutated = _mutate(text, fault, data)
    raw = (("\ufeff" if bom else "") + mutated).encode()
    imported = _outcome(lambda _: len(parse_suite(raw, "s.csv")), mutated)
    if fault == "none":
        assert imported == len(records)
    assert imported in (None, len(records))


def test_read_table_accounts_for_every_physical_line():
    table = read_table('a,b\r\n\n1,"x\ry"\n2,z\r', "t.csv")
    assert [line for line, _ in table.rows] == [3, 5]
    assert (table.physical_lines, table.blank_lines, table.record_lines) == (5, 1, 3)
