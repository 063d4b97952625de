"""Settings, declared once: name, default and help text; read from FLYWHEEL_* env vars at call time."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from flywheel.errors import BadInput

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAX_NUMBER = 2**63 - 1


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any  # of the setting's own type: a path or text, a count, a rate
    help: str
    minimum: float = 1  # the smallest accepted value of a numeric setting
    required: bool = False  # a text setting that may not be empty


SETTINGS = (
    Setting("db", str(PROJECT_ROOT / "data" / "flywheel.db"), "Path of the SQLite database file"),
    Setting("users", str(PROJECT_ROOT / "data" / "users.toml"), "TOML file of local users and roles"),
    Setting(
        "busy_timeout_ms", 5000, "How long a writer waits for a lock before it says the database is busy"
    ),
    Setting("ingest_batch", 5000, "Lines committed per ingest transaction"),
    Setting("write_chunk", 5000, "Rows a suite or results import commits per transaction", 100),
    Setting(
        "max_line_bytes",
        1_000_000,
        "Largest record in bytes (a line, a CSV record, a trace built from spans); larger are quarantined",
    ),
    Setting(
        "max_text_chars",
        200_000,
        "Longest accepted text (input, output, one message) in characters; longer traces are quarantined",
    ),
    Setting("max_bad_lines", 10_000, "Bad lines one import may quarantine before it stops as failed", 0),
    Setting("earliest_timestamp", "2000-01-01", "Traces dated before this day (UTC) are quarantined"),
    Setting("max_days_ahead", 366, "Traces dated more than this many days after now are quarantined", 0),
    Setting("run_stale_seconds", 300, "An import with no progress for this long is shown as interrupted"),
    Setting("token_prices", "", "JSON file of model prices per 1M tokens, for span imports' cost"),
    Setting("demo_traces", 6000, "Traces the demo database holds when the app creates it"),
    Setting("demo_seed", 7, "Seed of the demo database the app creates", 0),
    Setting("page_size", 50, "Rows per page in trace tables"),
    Setting("claim_minutes", 10, "Minutes a labeler holds a claimed item before it returns to the queue"),
    Setting("embed_worker", "on", "on: the app embeds approved scrubs in a thread; off: leave it to `embed`"),
    Setting("retire_months", 2, "Months an eval row must pass in every run before it is proposed to retire"),
    Setting("saturated_versions", 3, "Versions a taxonomy code must stay at 100% to count as saturated"),
    Setting("gate_adversarial_pct", 90, "Adversarial pass rate (percent) the release gate asks for"),
    Setting("drift_reference_weeks", 2, "First weeks of traffic that calibrate drift's threshold by default"),
    Setting("drift_max_traces", 1000, "Traces per week a drift run measures (a seeded sample above that)"),
    Setting("retention_days", 0, "Days raw trace text is kept before retention purges it (0: forever)", 0),
    Setting(
        "signals",
        str(PROJECT_ROOT / "data" / "signals.toml"),
        "TOML file of declared signals: name, kind, field and when it is bad",
    ),
)


@dataclass(frozen=True)
class Config:
    db: str
    users: str
    busy_timeout_ms: int
    ingest_batch: int
    write_chunk: int
    max_line_bytes: int
    max_text_chars: int
    max_bad_lines: int
    earliest_timestamp: str
    max_days_ahead: int
    run_stale_seconds: int
    token_prices: str
    demo_traces: int
    demo_seed: int
    page_size: int
    claim_minutes: int
    embed_worker: str
    retire_months: int
    saturated_versions: int
    gate_adversarial_pct: int
    drift_reference_weeks: int
    drift_max_traces: int
    retention_days: int
    signals: str

    def replace(self, **changes: Any) -> Config:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)


def default_config() -> Config:
    """The settings' defaults, whatever the environment says: for data that must not vary with it."""
    return load_config({})


def load_config(environ: dict[str, str] | None = None) -> Config:
    """Settings from FLYWHEEL_* environment variables, defaults for the rest."""
    return Config(**read_settings(SETTINGS, "FLYWHEEL_", environ))


def read_settings(
    settings: tuple[Setting, ...], prefix: str, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Each setting's value from the ``PREFIX`` + NAME environment variable, else its default."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in settings:
        raw = environ.get(f"{prefix}{setting.name.upper()}")
        values[setting.name] = setting.default if raw is None else _parse(setting, raw, prefix)
    return values


def _parse(setting: Setting, raw: str, prefix: str) -> object:
    name = f"{prefix}{setting.name.upper()}"
    if isinstance(setting.default, (int, float)):
        kind, what = (int, "an integer") if isinstance(setting.default, int) else (float, "a number")
        try:
            value = kind(raw)
        except ValueError:
            raise BadInput(f"{name}={raw!r}: expected {what} ({setting.help})") from None
        if not value >= setting.minimum:  # also refuses a float NaN
            raise BadInput(f"{name}={raw!r}: expected {what} >= {setting.minimum}")
        if not value <= MAX_NUMBER:  # SQLite stores no larger integer; also refuses infinity
            raise BadInput(f"{name}={raw!r}: expected {what} <= {MAX_NUMBER}")
        return value
    if setting.name == "earliest_timestamp":
        try:
            date.fromisoformat(raw)
        except ValueError:
            raise BadInput(f"{name}={raw!r}: expected a day as YYYY-MM-DD ({setting.help})") from None
    if setting.required and not raw.strip():
        raise BadInput(f"{name} is empty: expected {setting.help}")
    return raw.strip() if setting.required else raw
