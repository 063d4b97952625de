import io

from flywheel.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_redrawn_bar_with_rate_and_eta():
    clock = iter([0.0, 1.0, 1.05, 2.0, 4.0]).__next__
    out = Terminal()
    bar = ProgressBar("ingest", stream=out, clock=clock)
    bar.update(100, 400, 1000)  # at 1 s: 1,000 lines/s, a quarter done, 3 s to go
    bar.update(150, 400, 1500)  # 50 ms later: not redrawn
    bar.update(200, 400, 2000)
    bar.update(400, 400, 4000)
    bar.close()
    frames = out.getvalue().split("\r")[1:]
    assert len(frames) == 3 and "\n" not in "".join(frames[:-1]) and frames[-1].endswith("\n")
    assert "[######------------------]  25%" in frames[0] and "1,000/s" in frames[0] and "ETA 3s" in frames[0]
    assert "100%" in frames[-1] and "ETA" not in frames[-1]


def test_a_log_gets_plain_lines_at_most_every_ten_seconds():
    clock = iter([0.0, 1.0, 5.0, 12.0, 13.0]).__next__
    out = io.StringIO()
    bar = ProgressBar("ingest", stream=out, clock=clock)
    for done in (10, 20, 30, 40):
        bar.update(done, 40, done)
    bar.close()
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["75%", "100%"]  # nothing in the first 10 s
    assert "\r" not in out.getvalue() and "[" not in out.getvalue()
