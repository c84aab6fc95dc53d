"""Facts about countries from a shipped table (data/countries.csv): capital, continent, currency, calling code and
official languages."""

import csv
from pathlib import Path

ROWS = list(csv.DictReader((Path(__file__).parent / "data" / "countries.csv").open(encoding="utf-8")))
BY_NAME = {row["country"].lower(): row for row in ROWS}
TOOLS = [
    {"type": "function", "function": {
        "name": "country_facts",
        "description": "The capital, continent, currency code, calling code and official languages of a country.",
        "parameters": {"type": "object", "properties": {"country": {"type": "string", "maxLength": 60}},
                       "required": ["country"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "countries_in",
        "description": "The countries of a continent in the table, optionally only those using a given currency.",
        "parameters": {"type": "object", "properties": {
            "continent": {"enum": sorted({row["continent"] for row in ROWS})},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}},
            "required": ["continent"], "additionalProperties": False}}},
]


def country_facts(country: str) -> dict:
    row = BY_NAME.get(country.strip().lower())
    if row is None:
        raise KeyError(f"no country named {country!r} in the table of {len(ROWS)} countries")
    return dict(row)


def countries_in(continent: str, currency: str | None = None) -> dict:
    names = [r["country"] for r in ROWS if r["continent"] == continent and currency in (None, r["currency"])]
    return {"continent": continent, "currency": currency, "countries": names}
