"""scrubadub's ``Detector`` base and ``Filth`` classes, loaded without the rest of the package.

``import scrubadub`` imports every detector it bundles, and one of them (Skype) imports nltk, textblob and
scipy: seconds of start-up, most of a short ``scrub`` run, for classes we never use. Here only
``scrubadub.filth`` and ``scrubadub.detectors.base`` are loaded, from scrubadub's own files, under
placeholder parent packages that are dropped again at once; a later ``import scrubadub`` therefore
runs the real package and reuses these very modules, so the classes stay one and the same.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def _load_parts() -> tuple[types.ModuleType, types.ModuleType]:
    if "scrubadub.detectors.base" in sys.modules:
        return sys.modules["scrubadub.filth"], sys.modules["scrubadub.detectors.base"]
    spec = importlib.util.find_spec("scrubadub")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("scrubadub is not installed (pip install -r requirements.txt)")
    root = list(spec.submodule_search_locations)
    placeholders = {"scrubadub": root, "scrubadub.detectors": [f"{root[0]}/detectors"]}
    for name, path in placeholders.items():
        module = types.ModuleType(name)
        module.__path__ = path
        sys.modules[name] = module
    try:
        filth = importlib.import_module("scrubadub.filth")
        base = importlib.import_module("scrubadub.detectors.base")
    finally:
        for name, path in placeholders.items():
            if getattr(sys.modules.get(name), "__path__", None) is path:
                del sys.modules[name]
    return filth, base


_filth, _base = _load_parts()

Detector = _base.Detector
Filth = _filth.Filth
AddressFilth = _filth.AddressFilth
CreditCardFilth = _filth.CreditCardFilth
EmailFilth = _filth.EmailFilth
LocationFilth = _filth.LocationFilth
NameFilth = _filth.NameFilth
OrganizationFilth = _filth.OrganizationFilth
PhoneFilth = _filth.PhoneFilth
UrlFilth = _filth.UrlFilth
