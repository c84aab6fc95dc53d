"""The shipped tools, called through the sandbox as the tool_use recipe calls them."""

import pytest

from pipelines.tools import library_files
from pipelines.tools.sandbox import Sandbox
from pipelines.tools.validate import CallError, check_arguments, find_tool


def call(domain, name, **arguments):
    with Sandbox(library_files()[domain]) as box:
        tool = find_tool(box.describe(), name)
        outcome = box.run([(name, check_arguments(tool, arguments))])[0]
    return outcome


def test_every_shipped_tool_is_implemented_and_described():
    for domain, path in library_files().items():
        with Sandbox(path) as box:
            tools = box.describe()
            names = [t["function"]["name"] for t in tools]
            assert names and sorted(box.implemented) == sorted(names), domain
            for tool in tools:
                assert tool["type"] == "function" and tool["function"]["description"]
                assert tool["function"]["parameters"]["type"] == "object"


@pytest.mark.parametrize("domain, name, arguments, expected", [
    ("math_units", "calculate", {"expression": "(3 + 4) * 2.5"}, {"expression": "(3 + 4) * 2.5", "result": 17.5}),
    ("math_units", "calculate", {"expression": "2 ** 10 // 3"}, {"expression": "2 ** 10 // 3", "result": 341}),
    ("math_units", "convert_units", {"value": 10, "from_unit": "mi", "to_unit": "km"}, {"result": 16.09344}),
    ("math_units", "convert_units", {"value": 212, "from_unit": "F", "to_unit": "C"}, {"result": 100.0}),
    ("dates", "days_between", {"start": "2024-02-01", "end": "2024-03-01"}, {"days": 29}),
    ("dates", "add_days", {"date": "2023-12-30", "days": 3}, {"result": "2024-01-02"}),
    ("dates", "weekday", {"date": "2024-07-04"}, {"weekday": "Thursday"}),
    ("countries", "country_facts", {"country": "kenya"}, {"capital": "Nairobi", "currency": "KES"}),
    ("countries", "countries_in", {"continent": "Oceania"}, {"countries": ["Australia", "New Zealand"]}),
    ("shop", "get_product", {"product_id": "P007"}, {"name": "Hiking poles (pair)", "stock": 0}),
    ("shop", "order_total", {"order_id": "O1005"}, {"quantity": 3, "total": 59.97}),
    ("shop", "query_shop", {"sql": "SELECT count(*) FROM orders WHERE status = 'shipped'"}, {"rows": [[3]]}),
    ("text", "count_text", {"text": "One two. Three!\nFour"}, {"words": 4, "sentences": 3, "lines": 2}),
    ("text", "change_case", {"text": "Hello, World 2", "case": "snake"}, {"result": "hello_world_2"}),
    ("text", "count_occurrences", {"text": "The cat saw the CAT", "phrase": "cat"}, {"count": 2}),
])
def test_tool_results(domain, name, arguments, expected):
    outcome = call(domain, name, **arguments)
    assert outcome.ok, outcome.error
    assert {k: outcome.result[k] for k in expected} == expected


@pytest.mark.parametrize("domain, name, arguments, error", [
    ("math_units", "calculate", {"expression": "__import__('os').system('id')"}, "unsupported element Call"),
    ("math_units", "calculate", {"expression": "9 ** 9 ** 9"}, "too large"),
    ("math_units", "calculate", {"expression": "1 / 0"}, "ZeroDivisionError"),
    ("math_units", "convert_units", {"value": 1, "from_unit": "kg", "to_unit": "km"}, "cannot convert"),
    ("dates", "add_days", {"date": "2024-02-30", "days": 1}, "ValueError"),
    ("countries", "country_facts", {"country": "Atlantis"}, "no country named"),
    ("shop", "query_shop", {"sql": "DELETE FROM orders"}, "not authorized"),
    ("shop", "query_shop", {"sql": "ATTACH DATABASE 'x.db' AS x"}, "not authorized"),
    ("shop", "query_shop", {"sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                                   "SELECT count(*) FROM c"}, "interrupted"),
    ("shop", "get_product", {"product_id": "P999"}, "no product P999"),
])
def test_tool_errors_are_the_outcome(domain, name, arguments, error):
    outcome = call(domain, name, **arguments)
    assert outcome.status == "execution_error" and error in outcome.error


def test_schema_errors_never_reach_the_tool():
    with Sandbox(library_files()["dates"]) as box:
        tool = find_tool(box.describe(), "add_days")
        with pytest.raises(CallError) as error:
            check_arguments(tool, {"date": "July 4th", "days": 10**9})
    assert "date: 'July 4th' does not match" in error.value.detail and "days: 1000000000 is greater" in \
        error.value.detail
