import io

from flywheel.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_redrawn_bar_with_rate_and_eta():
    out = Terminal()
    bar = ProgressBar("ingest", stream=out, every=0)
    bar.update(100, 400, 1000)
    bar.update(400, 400, 4000)
    bar.close()
    frames = [f for f in out.getvalue().split("\r") if f.strip()]
    assert "\n" not in "".join(frames[:-1]) and out.getvalue().endswith("\n")
    quarter = next(f for f in frames if "25%" in f)
    assert "[######------------------]" in quarter and "1,000 lines" in quarter and "/s" in quarter
    assert "ETA" in quarter
    assert "[########################] 100%" in frames[-1] and "4,000 lines" in frames[-1]


def test_a_log_gets_plain_lines_and_nothing_for_a_short_job():
    quiet = io.StringIO()
    bar = ProgressBar("ingest", stream=quiet)  # plain lines at most every 10 s: none for this job
    for done in (10, 20, 30, 40):
        bar.update(done, 40, done)
    bar.close()
    assert quiet.getvalue() == ""
    out = io.StringIO()
    bar = ProgressBar("ingest", stream=out, plain_every=0)
    for done in (10, 40):
        bar.update(done, 40, done)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines and all(line.startswith("ingest  ") for line in lines)
    assert any("25%" in line and "10 lines" in line for line in lines) and "100%" in lines[-1]
    assert "\r" not in out.getvalue() and "[" not in out.getvalue()
