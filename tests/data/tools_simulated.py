"""A user's tools file with one implemented tool and one the teacher plays (`"simulated": True`, no function)."""

TOOLS = [
    {"type": "function", "function": {
        "name": "add", "description": "The sum of two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                       "required": ["a", "b"]}}},
    {"type": "function", "simulated": True, "function": {
        "name": "get_weather", "description": "The current temperature (Celsius) and sky of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
]


def add(a, b):
    return {"sum": a + b}
