"""The trace signals, declared once: name, SQL predicate over the ``traces`` columns, and the words a
user reads. Sampling, the overview charts, the trace filters and the flags column all read this table,
so a signal is defined in one place and means the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from flywheel.errors import BadInput


@dataclass(frozen=True)
class Signal:
    name: str
    predicate: str
    label: str
    anomaly: bool  # sampling's anomaly rule takes every trace carrying it

    @property
    def column(self) -> str:
        """The result column that holds this signal's 0/1 flag in ``flag_columns()``."""
        return f"flag_{self.name}"


SIGNALS = (
    Signal("thumbs_down", "thumbs = 'down'", "thumbs down", True),
    Signal("regenerated", "regenerated = 1", "regenerated", True),
    Signal("retried", "retried = 1", "retried", True),
    Signal("escalated", "escalated = 1", "escalated", True),
    Signal("guardrail_tripped", "guardrail_tripped = 1", "guardrail tripped", True),
    Signal("schema_invalid", "schema_valid = 0", "schema invalid", True),
    Signal("borderline_judge", "judge_score BETWEEN 0.4 AND 0.7", "borderline judge (0.4-0.7)", False),
    Signal("long_conversation", "turns >= 5", "long conversation (5+ turns)", False),
)
ANOMALIES = tuple(signal for signal in SIGNALS if signal.anomaly)


def signal(key: str) -> Signal:
    """The signal with this name or label; BadInput naming the choices otherwise."""
    for candidate in SIGNALS:
        if key in (candidate.name, candidate.label):
            return candidate
    raise BadInput(f"unknown signal {key!r}; expected one of {', '.join(s.label for s in SIGNALS)}")


def flag_columns(signals: tuple[Signal, ...] = ANOMALIES) -> str:
    """SQL select terms giving each signal's flag (1 when the trace carries it, else 0)."""
    return ", ".join(f"coalesce({s.predicate}, 0) AS {s.column}" for s in signals)


def flags(row: dict, signals: tuple[Signal, ...] = ANOMALIES) -> list[str]:
    """The labels of the signals a row selected with ``flag_columns()`` carries."""
    return [s.label for s in signals if row.get(s.column)]
