"""scrubadub's ``Detector`` base and ``Filth`` classes, loaded without the rest of the package.

``import scrubadub`` imports every detector it bundles, and one of them (Skype) imports nltk, textblob and
scipy: seconds of start-up, most of a short ``scrub`` run, for classes we never use; ``scrubadub.filth``
alone still imports every Filth class, one of them (date of birth) with dateparser. Here only the Filth
modules below and ``scrubadub.detectors.base`` are loaded, from scrubadub's own files, under placeholder
parent packages that are dropped again at once; a later ``import scrubadub`` therefore runs the real
package and reuses these very modules, so the classes stay one and the same.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING

# scrubadub.filth module → the Filth class we use from it.
FILTH_CLASSES = {
    "address": "AddressFilth",
    "credit_card": "CreditCardFilth",
    "email": "EmailFilth",
    "location": "LocationFilth",
    "name": "NameFilth",
    "organization": "OrganizationFilth",
    "phone": "PhoneFilth",
    "url": "UrlFilth",
}


def _load_parts() -> dict[str, type]:
    """Detector, Filth and the Filth classes of FILTH_CLASSES, by class name."""
    spec = importlib.util.find_spec("scrubadub")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("scrubadub is not installed (pip install -r requirements.txt)")
    root = list(spec.submodule_search_locations)
    placeholders = {
        "scrubadub": root,
        "scrubadub.filth": [f"{root[0]}/filth"],
        "scrubadub.detectors": [f"{root[0]}/detectors"],
    }
    for name, path in placeholders.items():
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = path
            sys.modules[name] = module
    try:
        filth = importlib.import_module("scrubadub.filth.base").Filth
        # scrubadub.detectors.base takes Filth from its package: the placeholder must hold it.
        vars(sys.modules["scrubadub.filth"])["Filth"] = filth
        classes = {"Detector": importlib.import_module("scrubadub.detectors.base").Detector, "Filth": filth}
        for module_name, cls in FILTH_CLASSES.items():
            classes[cls] = getattr(importlib.import_module(f"scrubadub.filth.{module_name}"), cls)
    finally:
        for name, path in placeholders.items():
            if getattr(sys.modules.get(name), "__path__", None) is path:
                del sys.modules[name]
    return classes


if TYPE_CHECKING:
    # The same classes as the checker sees them (scrubadub ships no type information, so they are Any).
    from scrubadub.detectors.base import Detector
    from scrubadub.filth.address import AddressFilth
    from scrubadub.filth.base import Filth
    from scrubadub.filth.credit_card import CreditCardFilth
    from scrubadub.filth.email import EmailFilth
    from scrubadub.filth.location import LocationFilth
    from scrubadub.filth.name import NameFilth
    from scrubadub.filth.organization import OrganizationFilth
    from scrubadub.filth.phone import PhoneFilth
    from scrubadub.filth.url import UrlFilth
else:
    _classes = _load_parts()

    Detector = _classes["Detector"]
    Filth = _classes["Filth"]
    AddressFilth = _classes["AddressFilth"]
    CreditCardFilth = _classes["CreditCardFilth"]
    EmailFilth = _classes["EmailFilth"]
    LocationFilth = _classes["LocationFilth"]
    NameFilth = _classes["NameFilth"]
    OrganizationFilth = _classes["OrganizationFilth"]
    PhoneFilth = _classes["PhoneFilth"]
    UrlFilth = _classes["UrlFilth"]
