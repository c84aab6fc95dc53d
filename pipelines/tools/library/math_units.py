"""Arithmetic on an expression (parsed, never evaluated as code) and unit conversion."""

import ast
import math
import operator

TOOLS = [
    {"type": "function", "function": {
        "name": "calculate",
        "description": "Evaluate an arithmetic expression with + - * / // % ** and parentheses, e.g. '(3 + 4) * 2.5'.",
        "parameters": {"type": "object", "properties": {
            "expression": {"type": "string", "maxLength": 200, "description": "the arithmetic expression"}},
            "required": ["expression"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "convert_units",
        "description": "Convert a quantity between units of length, mass, volume, time or temperature.",
        "parameters": {"type": "object", "properties": {
            "value": {"type": "number"},
            "from_unit": {"type": "string", "description": "e.g. km, mi, kg, lb, l, gal, h, min, C, F, K"},
            "to_unit": {"type": "string"}},
            "required": ["value", "from_unit", "to_unit"], "additionalProperties": False}}},
]

OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
             ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _value(node):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 100 or abs(left) > 1e6):
            raise ValueError("exponent or base too large")
        return OPERATORS[type(node.op)](left, right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise ValueError("^ is not a power here: write ** (2 ** 10)")
    raise ValueError(f"unsupported element {type(node).__name__}: only numbers, + - * / // % ** and parentheses")


def calculate(expression: str) -> dict:
    tree = ast.parse(expression, mode="eval")
    result = _value(tree.body)
    if isinstance(result, float) and not math.isfinite(result):
        raise ValueError("the result is not a finite number")
    if isinstance(result, float) and result.is_integer() and abs(result) < 1e15:
        result = int(result)
    return {"expression": expression, "result": result}


# factor to the dimension's base unit (m, kg, l, s)
UNITS = {
    "length": {"mm": 0.001, "cm": 0.01, "m": 1.0, "km": 1000.0, "in": 0.0254, "ft": 0.3048, "yd": 0.9144,
               "mi": 1609.344},
    "mass": {"mg": 1e-6, "g": 0.001, "kg": 1.0, "t": 1000.0, "oz": 0.028349523125, "lb": 0.45359237},
    "volume": {"ml": 0.001, "l": 1.0, "m3": 1000.0, "tsp": 0.00492892159375, "tbsp": 0.01478676478125,
               "cup": 0.2365882365, "pt": 0.473176473, "gal": 3.785411784},
    "time": {"s": 1.0, "min": 60.0, "h": 3600.0, "day": 86400.0, "week": 604800.0},
}
TEMPERATURE = {"C", "F", "K"}


def _to_kelvin(value, unit):
    return {"C": value + 273.15, "F": (value - 32) * 5 / 9 + 273.15, "K": value}[unit]


def _from_kelvin(value, unit):
    return {"C": value - 273.15, "F": (value - 273.15) * 9 / 5 + 32, "K": value}[unit]


def convert_units(value: float, from_unit: str, to_unit: str) -> dict:
    if from_unit in TEMPERATURE and to_unit in TEMPERATURE:
        result = _from_kelvin(_to_kelvin(value, from_unit), to_unit)
    else:
        dimension = next((d for d, units in UNITS.items() if from_unit in units and to_unit in units), None)
        if dimension is None:
            known = ", ".join(u for units in UNITS.values() for u in units)
            raise ValueError(f"cannot convert {from_unit!r} to {to_unit!r}; known units: {known}, C, F, K")
        result = value * UNITS[dimension][from_unit] / UNITS[dimension][to_unit]
    return {"value": value, "from_unit": from_unit, "to_unit": to_unit, "result": round(result, 6)}
