"""Settings, declared once: name, default and help text; read from FLYWHEEL_* env vars at call time."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from flywheel.errors import BadInput

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Setting:
    name: str
    default: object
    help: str


SETTINGS = (
    Setting("db", str(PROJECT_ROOT / "data" / "flywheel.db"), "Path of the SQLite database file"),
    Setting("users", str(PROJECT_ROOT / "data" / "users.toml"), "TOML file of local users and roles"),
    Setting("busy_timeout_ms", 5000, "How long a writer waits for a lock before failing"),
    Setting("ingest_batch", 2000, "Lines committed per ingest transaction"),
    Setting("max_line_bytes", 1_000_000, "Longest accepted trace line; longer lines are quarantined"),
    Setting("demo_traces", 6000, "Traces the demo database holds when the app creates it"),
    Setting("demo_seed", 7, "Seed of the demo database the app creates"),
    Setting("page_size", 50, "Rows per page in trace tables"),
    Setting("claim_minutes", 10, "Minutes a labeler holds a claimed item before it returns to the queue"),
    Setting("drift_reference_weeks", 2, "First weeks of traffic that calibrate drift's threshold by default"),
    Setting("drift_max_traces", 1000, "Traces per week a drift run measures (a seeded sample above that)"),
)


@dataclass(frozen=True)
class Config:
    db: str
    users: str
    busy_timeout_ms: int
    ingest_batch: int
    max_line_bytes: int
    demo_traces: int
    demo_seed: int
    page_size: int
    claim_minutes: int
    drift_reference_weeks: int
    drift_max_traces: int

    def replace(self, **changes: object) -> Config:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)


def load_config(environ: dict[str, str] | None = None) -> Config:
    """Settings from FLYWHEEL_* environment variables, defaults for the rest."""
    environ = os.environ if environ is None else environ
    values = {}
    for setting in SETTINGS:
        raw = environ.get(f"FLYWHEEL_{setting.name.upper()}")
        values[setting.name] = setting.default if raw is None else _parse(setting, raw)
    return Config(**values)


def _parse(setting: Setting, raw: str) -> object:
    if isinstance(setting.default, int):
        try:
            value = int(raw)
        except ValueError:
            raise BadInput(
                f"FLYWHEEL_{setting.name.upper()}={raw!r}: expected an integer ({setting.help})"
            ) from None
        if value <= 0:
            raise BadInput(f"FLYWHEEL_{setting.name.upper()}={raw!r}: expected a positive integer")
        return value
    return raw
