"""Calendar arithmetic on ISO dates (YYYY-MM-DD); no clock is read, so every answer is deterministic."""

import datetime as dt

DATE = {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "description": "a date, YYYY-MM-DD"}
TOOLS = [
    {"type": "function", "function": {
        "name": "days_between", "description": "The number of days from one date to another (negative if earlier).",
        "parameters": {"type": "object", "properties": {"start": DATE, "end": DATE},
                       "required": ["start", "end"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "add_days", "description": "The date a number of days after (or, negative, before) a date.",
        "parameters": {"type": "object", "properties": {
            "date": DATE, "days": {"type": "integer", "minimum": -100000, "maximum": 100000}},
            "required": ["date", "days"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "weekday", "description": "The day of the week of a date.",
        "parameters": {"type": "object", "properties": {"date": DATE}, "required": ["date"],
                       "additionalProperties": False}}},
]


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def days_between(start: str, end: str) -> dict:
    return {"start": start, "end": end, "days": (_date(end) - _date(start)).days}


def add_days(date: str, days: int) -> dict:
    return {"date": date, "days": days, "result": (_date(date) + dt.timedelta(days=days)).isoformat()}


def weekday(date: str) -> dict:
    return {"date": date, "weekday": _date(date).strftime("%A")}
