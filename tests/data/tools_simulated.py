"""A user's tools file with one implemented tool and one the teacher plays (`"simulated": True`, no function,
and `returns`, the JSON Schema its results follow)."""

TOOLS = [
    {"type": "function", "function": {
        "name": "add", "description": "The sum of two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                       "required": ["a", "b"]}}},
    {"type": "function", "simulated": True,
     "returns": {"type": "object", "properties": {"temperature_c": {"type": "number"},
                                                  "sky": {"type": "string", "maxLength": 40}},
                 "required": ["temperature_c", "sky"], "additionalProperties": False},
     "function": {
        "name": "get_weather", "description": "The current temperature (Celsius) and sky of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
]


def add(a, b):
    return {"sum": a + b}
