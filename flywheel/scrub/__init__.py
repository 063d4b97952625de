"""Layered PII scrubber on scrubadub's Detector API: regex → spaCy NER → lookup, with auditable spans.

Every detector is a scrubadub ``Detector`` yielding ``Filth``; overlaps are resolved here (not by
scrubadub's merge step, which is slow and merges across labels): the most specific detector wins, then the
longest span, and a losing span keeps only the part nobody else claimed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from flywheel.errors import BadInput
from flywheel.scrub._scrubadub import Detector, Filth, NameFilth
from flywheel.scrub.address import AddressDetector, PlaceDetector, english_words
from flywheel.scrub.detectors import (
    DEFAULT_ID_PATTERNS,
    CredentialUrlDetector,
    CreditCardDetector,
    EmailDetector,
    IbanDetector,
    IdDetector,
    IpDetector,
    PhoneDetector,
)
from flywheel.scrub.ner import (
    PIECE_CHARS,
    ContextNameDetector,
    OrganisationPatternDetector,
    SpacyEntityDetector,
    address_headings,
    load_pipeline,
)
from flywheel.scrub.normalise import MARKED, marked_name, normalise, to_original

__all__ = [
    "DEFAULT_ID_PATTERNS",
    "LABELS",
    "LAYERS",
    "MARKED",
    "PIECE_CHARS",
    "SCRUBBER_VERSION",
    "ScrubResult",
    "Scrubber",
    "Span",
    "keep_phrases",
    "load_known_names",
    "load_pipeline",
    "marked_name",
    "normalise",
    "render",
    "resolve_overlaps",
    "scrub_jsonl",
]

SCRUBBER_VERSION = "1.1.0"
LABELS = ("PERSON", "ORG", "LOCATION", "EMAIL", "PHONE", "CREDIT_CARD", "ID", "IP", "URL", "CUSTOMER")
LAYERS = ("regex", "ner", "lookup")

# scrubadub Filth.type → our label.
FILTH_LABELS = {
    "name": "PERSON",
    "organization": "ORG",
    "location": "LOCATION",
    "address": "LOCATION",
    "email": "EMAIL",
    "phone": "PHONE",
    "credit_card": "CREDIT_CARD",
    "id": "ID",
    "ip": "IP",
    "url": "URL",
    "customer": "CUSTOMER",
}
# Lower rank wins an overlap: checksummed and structured matches beat grammar, grammar beats the model.
DETECTOR_RANK = {
    "email": 0,
    "url_credentials": 0,
    "iban": 0,
    "credit_card": 0,
    "ip": 0,
    "phone": 1,
    "lookup": 1,
    "id": 2,
    "address": 3,
    "context": 4,
    "spacy": 5,
    "gazetteer": 5,
}


@dataclass(frozen=True)
class Span:
    """One redaction: offsets into the original text (end exclusive), label and detector name."""

    start: int
    end: int
    label: str
    detector: str


@dataclass(frozen=True)
class ScrubResult:
    """Scrubbed text and the spans that were replaced in the original."""

    text: str
    spans: tuple[Span, ...]


class CustomerFilth(Filth):
    type = "customer"


class KnownNameDetector(Detector):
    """Known customer/organisation names, case-insensitive, whole words only."""

    name = "lookup"

    def __init__(self, names: Iterable[str] = (), **kwargs: object) -> None:
        super().__init__(**kwargs)
        cleaned = sorted({" ".join(n.split()) for n in names if n and n.strip()}, key=lambda n: (-len(n), n))
        alternatives = "|".join(r"\s+".join(map(re.escape, n.split())) for n in cleaned)
        self.regex = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE) if cleaned else None

    def iter_filth(self, text: str, document_name: str | None = None) -> Iterable[Filth]:
        if self.regex is None:
            return
        for match in self.regex.finditer(text):
            yield CustomerFilth(match=match, detector_name=self.name, document_name=document_name)


# Redactions a format or checksum verified stay even inside a never-redact phrase.
VERIFIED = frozenset({"email", "credit_card", "phone", "iban", "ip", "url_credentials"})


def _phrase_pattern(phrases: Iterable[str]) -> re.Pattern | None:
    cleaned = sorted({" ".join(p.split()) for p in phrases if p and p.strip()}, key=lambda p: (-len(p), p))
    alternatives = "|".join(r"\s+".join(map(re.escape, p.split())) for p in cleaned)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE) if cleaned else None


def keep_phrases(view: str, spans: Sequence[Span], pattern: re.Pattern | None) -> tuple[Span, ...]:
    """The spans less those lying inside an occurrence of a never-redact phrase (verified ones stay)."""
    if pattern is None:
        return tuple(spans)
    kept = [(m.start(), m.end()) for m in pattern.finditer(view)]
    return tuple(
        s for s in spans if s.detector in VERIFIED or not any(b <= s.start and s.end <= e for b, e in kept)
    )


class Scrubber:
    """Layered scrubber; construct once and reuse (the spaCy pipeline is shared per process).

    ``never_redact``: phrases a lead listed (a team's name, a product) that no redaction may fall
    inside, whatever detector found it, except a verified e-mail, card, phone, IBAN, IP or URL.
    """

    def __init__(
        self,
        known_names: Iterable[str] = (),
        id_patterns: Iterable[str] | None = None,
        layers: Sequence[str] = LAYERS,
        piece_chars: int = PIECE_CHARS,
        never_redact: Iterable[str] = (),
    ) -> None:
        """``piece_chars``: NER reads a longer text in pieces of at most this many characters (and never
        more than the spaCy pipeline's ``max_length``), so no text is too long to scrub."""
        if isinstance(piece_chars, bool) or not isinstance(piece_chars, int) or piece_chars < 1000:
            raise BadInput(f"piece_chars={piece_chars!r}: expected an integer of at least 1000")
        if isinstance(layers, str) or not set(layers) <= set(LAYERS):
            raise BadInput(f"layers={layers!r}: expected a subset of {LAYERS}")
        if isinstance(known_names, str):
            raise BadInput(f"known_names={known_names!r}: expected a list of names, not one string")
        if isinstance(never_redact, str):
            raise BadInput(f"never_redact={never_redact!r}: expected a list of phrases, not one string")
        self.never_redact = _phrase_pattern(never_redact)
        self.layers = tuple(layers)
        self.text_detectors: list[Detector] = []
        self.ner: SpacyEntityDetector | None = None
        if "regex" in layers:
            self.text_detectors += [
                EmailDetector(),
                CredentialUrlDetector(),
                CreditCardDetector(),
                IbanDetector(),
                IpDetector(),
                PhoneDetector(),
                IdDetector(DEFAULT_ID_PATTERNS if id_patterns is None else id_patterns),
                AddressDetector(),
            ]
        if "ner" in layers:
            self.ner = SpacyEntityDetector(piece_chars=piece_chars)
            self.text_detectors += [ContextNameDetector(), OrganisationPatternDetector()]
        if "lookup" in layers:
            self.text_detectors += [KnownNameDetector(known_names), PlaceDetector()]

    def scrub(self, text: str) -> ScrubResult:
        """Scrub one text."""
        return self.scrub_many([text])[0]

    def scrub_many(self, texts: Iterable[str], batch_size: int = 64) -> list[ScrubResult]:
        """Scrub many texts; NER runs over them in nlp.pipe batches.

        Safe to call from several threads at once: the scrubber is never changed by a call.
        """
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise BadInput(f"texts[{i}]={text!r}: expected a string")
        views = [normalise(text) for text in texts]
        found: dict[int, list[Filth]] = defaultdict(list)
        if self.ner is not None and texts:
            names = [str(i) for i in range(len(texts))]
            for filth in self.ner.iter_filth_documents([v for v, _ in views], names, batch_size=batch_size):
                found[int(filth.document_name)].append(filth)
        return [
            self._finish(text, view, origin, found[i])
            for i, (text, (view, origin)) in enumerate(zip(texts, views, strict=True))
        ]

    def _finish(self, text: str, view: str, origin: list[int] | None, filths: list[Filth]) -> ScrubResult:
        """Run the text detectors on the view, resolve overlaps and map the spans back to ``text``."""
        for detector in self.text_detectors:
            filths.extend(detector.iter_filth(view))
        if self.ner is not None:
            starts = [f.beg for f in filths if f.detector_name == "address"]
            for beg, end in address_headings(view, starts):
                filths.append(NameFilth(beg=beg, end=end, text=view[beg:end], detector_name="context"))
        spans = keep_phrases(view, resolve_overlaps(view, filths), self.never_redact)
        if origin is not None:
            spans = tuple(Span(*to_original(origin, s.start, s.end), s.label, s.detector) for s in spans)
        return ScrubResult(text=render(text, spans), spans=spans)


def resolve_overlaps(text: str, filths: Iterable[Filth]) -> tuple[Span, ...]:
    """Non-overlapping spans: most specific detector first, then longest; losers keep unclaimed parts."""
    candidates = sorted(
        filths,
        key=lambda f: (DETECTOR_RANK.get(f.detector_name, 9), -(f.end - f.beg), f.beg, f.type),
    )
    claimed = [False] * len(text)
    spans = []
    for filth in candidates:
        label = FILTH_LABELS[filth.type]
        parts = _free_parts(text, claimed, filth.beg, filth.end)
        if parts != [_trim(text, filth.beg, filth.end)]:
            # What a loser keeps beside a winner must still look like a name, not "Orchestra" or "St".
            parts = [(b, e) for b, e in parts if not _plain_words(text[b:e])]
        for beg, end in parts:
            spans.append(Span(beg, end, label, filth.detector_name or ""))
            claimed[beg:end] = [True] * (end - beg)
    return tuple(sorted(spans, key=lambda s: s.start))


def _free_parts(text: str, claimed: list[bool], beg: int, end: int) -> list[tuple[int, int]]:
    """Unclaimed runs of [beg, end), trimmed of spaces and punctuation, that still hold a letter or digit."""
    parts, run_start = [], None
    for pos in range(beg, end + 1):
        free = pos < end and not claimed[pos]
        if free and run_start is None:
            run_start = pos
        elif not free and run_start is not None:
            parts.append(_trim(text, run_start, pos))
            run_start = None
    # A piece that starts or ends inside a word is a fragment of a longer winner ("ion"), not a name.
    return [
        (b, e)
        for b, e in parts
        if b < e
        and any(c.isalnum() for c in text[b:e])
        and not (b > 0 and text[b - 1].isalpha() and text[b].isalpha())
        and not (e < len(text) and text[e].isalpha() and text[e - 1].isalpha())
    ]


def _plain_words(value: str) -> bool:
    """Only ordinary lower-case vocabulary ("Orchestra", "St."), no digits."""
    words = re.findall(r"[^\W\d_]+", value)
    return not any(c.isdigit() for c in value) and all(w.lower() in english_words() for w in words)


def _trim(text: str, beg: int, end: int) -> tuple[int, int]:
    while beg < end and not (text[beg].isalnum() or text[beg] in "+(#"):
        beg += 1
    while end > beg and not (text[end - 1].isalnum() or text[end - 1] in ".)"):
        end -= 1
    return beg, end


def render(text: str, spans: Sequence[Span]) -> str:
    """The text with each span replaced by its [LABEL] placeholder."""
    out, pos = [], 0
    for span in spans:
        out += [text[pos : span.start], f"[{span.label}]"]
        pos = span.end
    out.append(text[pos:])
    return "".join(out)


def load_known_names(path: str | Path) -> list[str]:
    """Known customer/organisation names, one per line; '#' starts a comment."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"known names file {str(path)!r} cannot be read: {exc}") from None
    names = (line.split("#", 1)[0].strip() for line in lines)
    return [name for name in names if name]


PARALLEL_MIN = 2000  # records; below this, forking workers costs more than it saves


def scrub_jsonl(
    in_path: str | Path,
    out_path: str | Path,
    known_names: Iterable[str] = (),
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 64,
    workers: int | None = None,
) -> int:
    """Scrub {"id", "text"} lines into {"id", "scrubbed", "spans"} lines; returns the number written.

    Large files are scrubbed by ``workers`` processes (default: one per available core), forked after
    the model is loaded so they share it; output order is input order either way. A batch is one task
    of a worker: one nlp.pipe batch, small enough that both cores stay busy to the end.
    """
    records = _read_records(Path(in_path))
    scrubber = Scrubber(known_names=known_names)
    texts = [text for _, text in records]
    workers = _worker_count(workers, len(records))
    written = 0
    with Path(out_path).open("w", encoding="utf-8") as out:
        for results in _scrub_batches(scrubber, texts, batch_size, workers):
            for (record_id, _), result in zip(
                records[written : written + len(results)], results, strict=True
            ):
                spans = [
                    {"start": s.start, "end": s.end, "label": s.label, "detector": s.detector}
                    for s in result.spans
                ]
                out.write(
                    json.dumps({"id": record_id, "scrubbed": result.text, "spans": spans}, ensure_ascii=False)
                    + "\n"
                )
                written += 1
            if progress is not None:
                progress(written, len(records))
    return written


def _worker_count(workers: int | None, records: int) -> int:
    if workers is None:
        return min(len(os.sched_getaffinity(0)), 8) if records >= PARALLEL_MIN else 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise BadInput(f"workers={workers!r}: expected a positive integer")
    return workers


_pool_scrubber: Scrubber | None = None


def _scrub_batches(
    scrubber: Scrubber, texts: list[str], batch_size: int, workers: int
) -> Iterator[list[ScrubResult]]:
    """Scrub results batch by batch, in order; in forked worker processes when ``workers`` > 1."""
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    if workers == 1 or len(batches) < 2:
        for batch in batches:
            yield scrubber.scrub_many(batch)
        return
    global _pool_scrubber
    scrubber.scrub("Warm-up: Ana Lee of Globex in Paris, ana@example.com.")  # model and word lists loaded
    _pool_scrubber = scrubber
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            yield from pool.imap(_scrub_in_worker, batches)
    finally:
        _pool_scrubber = None


def _scrub_in_worker(texts: list[str]) -> list[ScrubResult]:
    assert _pool_scrubber is not None, "worker started without a scrubber"
    return _pool_scrubber.scrub_many(texts)


def _read_records(path: Path) -> list[tuple[object, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"input file {str(path)!r} cannot be read: {exc}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or "id" not in obj or not isinstance(obj.get("text"), str):
            raise BadInput(f'{path}:{number}: expected an object with "id" and a string "text"')
        records.append((obj["id"], obj["text"]))
    return records
