"""Regex-layer detectors: scrubadub Detectors for structured PII (e-mail, phone, card, IBAN, IDs, IP, URL)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator

import phonenumbers
from stdnum import iban as stdnum_iban

from flywheel.errors import BadInput
from flywheel.scrub._scrubadub import CreditCardFilth, Detector, EmailFilth, Filth, PhoneFilth, UrlFilth


class IdFilth(Filth):
    type = "id"


class IpFilth(Filth):
    type = "ip"


class _PatternDetector(Detector):
    """A Detector that yields one Filth per accepted regex match (group 'pii' if present)."""

    regex: re.Pattern[str]
    filth_cls: type[Filth] = Filth

    def accept(self, match: re.Match[str]) -> bool:
        return True

    def iter_filth(self, text: str, document_name: str | None = None) -> Iterator[Filth]:
        for match in self.regex.finditer(text):
            if not self.accept(match):
                continue
            group = "pii" if "pii" in self.regex.groupindex else 0
            beg, end = match.span(group)
            if beg < end:
                yield self.filth_cls(
                    beg=beg,
                    end=end,
                    text=text[beg:end],
                    detector_name=self.name,
                    document_name=document_name,
                    locale=self.locale,
                )


class EmailDetector(_PatternDetector):
    """E-mail addresses; unlike scrubadub's, never swallows the words around 'at'/'dot'."""

    name = "email"
    filth_cls = EmailFilth
    regex = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}(?![\w-])")


class CredentialUrlDetector(_PatternDetector):
    """URLs that carry a user name or password (scheme://user:pass@host/...)."""

    name = "url_credentials"
    filth_cls = UrlFilth
    regex = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/@:]+(?::[^\s/@]*)?@[^\s]+", re.IGNORECASE)


def luhn_ok(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


class CreditCardDetector(_PatternDetector):
    """Card numbers of 12-19 digits, plain, spaced or dashed in groups, that pass the Luhn check."""

    name = "credit_card"
    filth_cls = CreditCardFilth
    regex = re.compile(
        r"(?<![\w-])(?:\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -])\d{6}\2\d{4,5}|\d{12,19})(?![\w-])"
    )

    def accept(self, match: re.Match[str]) -> bool:
        digits = re.sub(r"\D", "", match.group())
        return 12 <= len(digits) <= 19 and luhn_ok(digits)


class IbanDetector(_PatternDetector):
    """IBANs, plain or in groups of four, whose mod-97 checksum and country format hold."""

    name = "iban"
    filth_cls = IdFilth
    regex = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![\w])")

    def accept(self, match: re.Match[str]) -> bool:
        return stdnum_iban.is_valid(match.group())


# Dates and plain amounts look like phone numbers; these shapes are never phones. Digits joined to a
# word by a hyphen (ACC-1987-4939) belong to an identifier, not a phone number.
_DATE = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{2,4}$")
_CANDIDATE_PHONE = re.compile(
    r"(?<![\w+])(?<!\w-)(?:\+\d{1,3}[ .-]?(?:\(0\)[ .-]?)?|00\d{2}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?"
    r"\d{1,5}(?:[ .-]\d{1,8}){0,5}(?![\w-])"
)


class PhoneDetector(_PatternDetector):
    """Phone numbers in international (+44, 0049) and national formats, spaced, dashed or dotted."""

    name = "phone"
    filth_cls = PhoneFilth
    regex = _CANDIDATE_PHONE

    def accept(self, match: re.Match[str]) -> bool:
        raw = match.group()
        digits = re.sub(r"\D", "", raw)
        if raw.startswith(("+", "00")):
            return self._valid_international(raw)
        if not 7 <= len(digits) <= 13 or _DATE.match(raw):
            return False
        before = match.string[max(0, match.start() - 2) : match.start()]
        if any(sign in before for sign in "$€£¥"):
            return False
        # A bare run of digits is an ID or card unless it is shaped like a national number.
        return bool(re.search(r"[ .()-]", raw)) or (raw.startswith("0") and 9 <= len(digits) <= 11)

    @staticmethod
    def _valid_international(raw: str) -> bool:
        text = "+" + raw[2:] if raw.startswith("00") else raw
        try:
            number = phonenumbers.parse(text, None)
        except phonenumbers.NumberParseException:
            return False
        return phonenumbers.is_possible_number(number)


DEFAULT_ID_PATTERNS = (
    # A keyword (order, account, ticket, ...) then the id itself, which must contain a digit.
    r"(?i:\b(?:order|account|acct|a/c|ticket|case|invoice|ref(?:erence)?|customer|member(?:ship)?|booking"
    r"|confirmation|tracking|contract|policy|claim|transaction|card|passport|licen[cs]e|ssn|tax|vat|user"
    r"|client|shipment|parcel|rma|subscription)\b\s*(?:no\.?|number|num|id|code|#)?\s*[:#]?\s*)"
    r"(?P<pii>(?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9/-]{3,}[A-Za-z0-9])",
    # Prefixed ids such as ORD-123456, TCK-88231, INV/2024/0042.
    r"\b[A-Z]{2,6}[-/#]\d[\d/-]{2,}\d\b",
    # US social security numbers.
    r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])",
    # Any token with six or more digits (with letters or dashes) is an identifier of some kind.
    r"(?<![\w-])(?=(?:[A-Za-z-]*\d){6})[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*(?![\w-])",
)


def compile_id_patterns(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """Compile id patterns; a bad pattern raises BadInput naming it."""
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except (re.error, TypeError) as exc:
            raise BadInput(f"id pattern {pattern!r} is not a valid regular expression: {exc}") from None
    return tuple(compiled)


class IdDetector(Detector):
    """Account, order and ticket ids, SSNs and long digit tokens, from configurable patterns."""

    name = "id"

    def __init__(self, patterns: Iterable[str] = DEFAULT_ID_PATTERNS, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.patterns = compile_id_patterns(patterns)

    def iter_filth(self, text: str, document_name: str | None = None) -> Iterator[Filth]:
        for regex in self.patterns:
            group = "pii" if "pii" in regex.groupindex else 0
            for match in regex.finditer(text):
                beg, end = match.span(group)
                if beg < end:
                    yield IdFilth(
                        beg=beg,
                        end=end,
                        text=text[beg:end],
                        detector_name=self.name,
                        document_name=document_name,
                    )


class IpDetector(_PatternDetector):
    """IPv4 and IPv6 addresses that parse as such."""

    name = "ip"
    filth_cls = IpFilth
    regex = re.compile(
        r"(?<![\w.:])(?:\d{1,3}(?:\.\d{1,3}){3}|(?=[0-9a-fA-F:]*:[0-9a-fA-F:]*:)[0-9a-fA-F:]{3,39})(?![\w.:])"
    )

    def accept(self, match: re.Match[str]) -> bool:
        try:
            ipaddress.ip_address(match.group())
        except ValueError:
            return False
        return True
