"""A small shop's database (data/shop_*.csv loaded into an in-memory SQLite): products, customers, orders. Queries
are read-only (an authorizer allows SELECT and reads only) and capped in rows and work."""

import csv
import sqlite3
from pathlib import Path

DATA = Path(__file__).parent / "data"
TABLES = {"products": "shop_products.csv", "customers": "shop_customers.csv", "orders": "shop_orders.csv"}
MAX_ROWS = 50


def _load() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    for table, name in TABLES.items():
        rows = list(csv.DictReader((DATA / name).open(encoding="utf-8")))
        columns = list(rows[0])
        db.execute(f"CREATE TABLE {table} ({', '.join(columns)})")
        db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(columns))})",
                       [[_number(r[c]) for c in columns] for r in rows])
    db.commit()
    allowed = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
    db.set_authorizer(lambda action, *_: sqlite3.SQLITE_OK if action in allowed else sqlite3.SQLITE_DENY)
    db.set_progress_handler(_Budget(), 1000)
    return db


def _number(text: str):
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        return text


class _Budget:
    """Stops a statement after about 2 million virtual-machine steps (a runaway recursive query)."""

    def __init__(self):
        self.ticks = 0

    def __call__(self):
        self.ticks += 1
        return self.ticks > 2000


SCHEMA = "products(product_id, name, category, price, stock); customers(customer_id, name, city, joined); " \
         "orders(order_id, customer_id, product_id, quantity, order_date, status)"
DB = _load()
TOOLS = [
    {"type": "function", "function": {
        "name": "query_shop",
        "description": f"Run one read-only SQL SELECT on the shop's SQLite database. Tables: {SCHEMA}.",
        "parameters": {"type": "object", "properties": {"sql": {"type": "string", "maxLength": 2000}},
                       "required": ["sql"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "get_product", "description": "A product's name, category, price and stock, by its id (P001 to P012).",
        "parameters": {"type": "object", "properties": {"product_id": {"type": "string", "pattern": "^P[0-9]{3}$"}},
                       "required": ["product_id"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "order_total", "description": "The total price of an order (quantity times the product's price), by its id "
                                       "(O1001 to O1012).",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "pattern": "^O[0-9]{4}$"}},
                       "required": ["order_id"], "additionalProperties": False}}},
]


def query_shop(sql: str) -> dict:
    DB.set_progress_handler(_Budget(), 1000)
    cursor = DB.execute(sql)
    columns = [d[0] for d in cursor.description or []]
    rows = cursor.fetchmany(MAX_ROWS + 1)
    return {"columns": columns, "rows": [list(r) for r in rows[:MAX_ROWS]], "truncated": len(rows) > MAX_ROWS}


def get_product(product_id: str) -> dict:
    row = DB.execute("SELECT * FROM products WHERE product_id = ?", (product_id,)).fetchone()
    if row is None:
        raise KeyError(f"no product {product_id}")
    return dict(zip(("product_id", "name", "category", "price", "stock"), row))


def order_total(order_id: str) -> dict:
    row = DB.execute("SELECT o.order_id, o.quantity, p.price, p.name FROM orders o JOIN products p "
                     "USING (product_id) WHERE o.order_id = ?", (order_id,)).fetchone()
    if row is None:
        raise KeyError(f"no order {order_id}")
    return {"order_id": row[0], "product": row[3], "quantity": row[1], "unit_price": row[2],
            "total": round(row[1] * row[2], 2)}
