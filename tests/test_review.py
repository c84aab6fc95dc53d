"""The review app on a real run made here: pages, filters, labels, their security rules, labels flowing into the
export on rebuild, and the whole loop in a real headless Chromium (Debian's chromium + chromium-driver)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import polars as pl
import pytest
from starlette.testclient import TestClient

from conftest import ROOT, report, run_build
from pipelines.core import labels as L
from pipelines.review.app import create_app
from test_ultrafeedback import scripted_judge
from test_teacher import FaultServer

DATA = Path(__file__).parent / "data" / "review"
TOKEN = "test-token-0123456789"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002"
                    "0001e221bc330000000049454e44ae426082")  # a 1x1 picture


@pytest.fixture(scope="module")
def judged_run(tmp_path_factory, teacher_server):
    """An ultrafeedback run on the embedded teacher (the judge a scripted loopback server, so pairs form whatever
    the tiny model writes) over prompts with a near-duplicate and a broken record."""
    judge = FaultServer(answer=scripted_judge(favour_first=False))
    threading.Thread(target=judge.serve_forever, daemon=True).start()
    run_dir = tmp_path_factory.mktemp("review") / "uf"
    overrides = (f"sources={DATA / 'prompts.jsonl'}", "prompt_kind=text", f"judge.base_url={judge.url}",
                 "judge.model=scripted", "judge_mode=listwise", "n_completions=2", "max_tokens=32", "test_fraction=0.3")
    run_build(run_dir, *overrides, server=teacher_server, recipe="ultrafeedback")
    yield run_dir, overrides
    judge.shutdown()
    judge.server_close()


def client(run_dir: Path, pages_need_token: bool = False) -> TestClient:
    return TestClient(create_app(run_dir, TOKEN, {"testserver", "127.0.0.1"}, pages_need_token, reviewer="t"))


WRITE = {"X-Review-Token": TOKEN, "Origin": "http://testserver"}


def test_the_label_store_keeps_every_decision_and_counts_the_latest(tmp_path):
    assert L.latest(tmp_path) == {} and L.digest(tmp_path) == ""
    L.record(tmp_path, "pair", "p1", "tie", reviewer="ann")
    L.record(tmp_path, "pair", "p1", "rejected_better", note="the second is right", reviewer="bob")
    L.record(tmp_path, "row", "r1", "drop", note="off topic")
    made = L.latest(tmp_path)
    assert made[("pair", "p1")].label == "rejected_better" and made[("pair", "p1")].reviewer == "bob"
    assert made[("row", "r1")].note == "off topic"
    first = L.digest(tmp_path)
    L.record(tmp_path, "row", "r1", "keep")
    assert L.digest(tmp_path) != first  # a changed mind changes the export's fingerprint
    with sqlite3.connect(tmp_path / L.FILE) as db:
        assert db.execute("SELECT count(*) FROM labels").fetchone()[0] == 4  # every decision is kept
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(L.MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for target, label in (("pair", "keep"), ("row", "tie"), ("nope", "tie")):
        with pytest.raises(L.LabelError, match="choose"):
            L.record(tmp_path, target, "x", label)
    with pytest.raises(L.LabelError, match="note"):
        L.record(tmp_path, "row", "x", "drop", note="n" * (L.MAX_NOTE + 1))


def test_two_writers_at_once_lose_no_label(tmp_path):
    def write(k: int) -> None:
        for i in range(40):
            L.record(tmp_path, "row", f"r{k}-{i}", "drop")
    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(L.latest(tmp_path, "row")) == 160


def test_pages_filters_and_write_rules_on_a_real_run(judged_run):
    run_dir, _ = judged_run
    web = client(run_dir)
    home = web.get("/")
    assert home.status_code == 200 and "<svg" in home.text and "near_duplicate" in home.text
    assert "Preference" in home.text or "preference" in home.text  # the card, rendered
    near = web.get("/stage/dedup_near?status=dropped&reason=near_duplicate")
    assert near.status_code == 200 and near.text.count('class="reason">near_duplicate') == 1
    assert "no rows match" in web.get("/stage/dedup_near?q=zzzz-not-there").text
    assert "a record cut in the middle" in web.get("/quarantine?reason=bad_json").text or \
        "prompts.jsonl:5" in web.get("/quarantine").text
    dedup = web.get("/dedup").text
    assert "estimated Jaccard" in dedup and re.search(r"<(del|ins)>(daytime|day)</\1>", dedup)  # the word that differs
    pairs = web.get("/pairs").text
    keys = re.findall(r'data-target="pair" data-id="(\w+)"', pairs)
    assert keys and "overall" in pairs and "Rationale" not in pairs  # ratings shown as a table, not raw text
    # writes: the token and the same origin, and a label the store knows
    assert web.post("/api/labels", json={"target": "pair", "row_id": keys[0], "label": "tie"}).status_code == 403
    assert web.post("/api/labels", json={"target": "pair", "row_id": keys[0], "label": "tie"},
                    headers={**WRITE, "X-Review-Token": "wrong"}).status_code == 401
    assert web.post("/api/labels", json={"target": "pair", "row_id": keys[0], "label": "tie"},
                    headers={**WRITE, "Origin": "http://evil.example"}).status_code == 403
    assert web.post("/api/labels", json={"target": "pair", "row_id": keys[0], "label": "great"},
                    headers=WRITE).status_code == 400
    assert web.get("/", headers={"Host": "evil.example"}).status_code == 400  # DNS rebinding
    assert L.latest(run_dir) == {}  # nothing refused was stored
    # bound beyond loopback: pages need the token (once in the link, then the cookie)
    guarded = client(run_dir, pages_need_token=True)
    assert guarded.get("/").status_code == 401
    assert guarded.get(f"/?token={TOKEN}", follow_redirects=False).status_code == 303
    assert guarded.get("/").status_code == 200  # the cookie now


def raw_get(port: int, path: str, host: str = "127.0.0.1") -> int:
    """A GET with the path exactly as given (clients normalise `..` away)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", f"{host}:{port}")
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


@contextmanager
def serving(run_dir: Path, *args: str):
    """`python -m pipelines.review RUN_DIR ARGS` as a user starts it; yields (the printed lines, the link, its port)."""
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.review", str(run_dir), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [""]
    while "open http" not in lines[-1]:
        lines.append(proc.stdout.readline())
        assert lines[-1] or proc.poll() is None, "the review app did not start: " + "".join(lines)
    url = lines[-1].split()[1]
    port = urlsplit(url).port
    try:
        for _ in range(100):
            try:
                raw_get(port, "/static/review.css")
                break
            except OSError:
                time.sleep(0.1)
        yield lines, url, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def live_review(judged_run, tmp_path):
    """`python -m pipelines.review` on a copy of the run, as a user starts it."""
    run_dir = tmp_path / "uf"
    shutil.copytree(judged_run[0], run_dir)
    (tmp_path / "secret.txt").write_text("outside the run")
    os.symlink(tmp_path / "secret.txt", run_dir / "link.txt")
    (run_dir / "export" / "pictures").mkdir(exist_ok=True)
    (run_dir / "export" / "pictures" / "scores.png").write_bytes(PNG)
    os.symlink(tmp_path / "secret.txt", run_dir / "export" / "pictures" / "out.png")
    with serving(run_dir, "--reviewer", "tester") as (_, url, port):
        yield run_dir, url, port


def test_files_serves_the_cards_pictures_and_nothing_else(live_review):
    run_dir, url, port = live_review
    assert url.startswith("http://127.0.0.1:")
    assert raw_get(port, "/files/export/pictures/scores.png") == 200
    for path in ("/files/../secret.txt", "/files/%2e%2e/secret.txt", "/files/..%2fsecret.txt", "/files/link.txt",
                 "/files//etc/passwd", "/files/%2fetc%2fpasswd", "/static/../../labels.py",
                 "/files/export/pictures/out.png",  # a symlink out of the run
                 "/files/report.json", "/files/labels.sqlite", "/files/requests.sqlite", "/files/config.json",
                 "/files/export/README.md", "/files/export/pictures/../../report.json",
                 "/files/a%00b.png", "/files/export/pictures/x%00.png", "/files/" + "n" * 300 + ".png",
                 "/files/export/pictures/" + "n" * 300 + ".png"):
        assert raw_get(port, path) == 404, path  # never a 500: a NUL byte or a name over 255 characters included
    assert raw_get(port, "/favicon.ico") == 200


def browser(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                            options=options)


def test_a_reviewer_filters_labels_by_keyboard_and_the_rebuild_applies_it(judged_run, live_review, tmp_path,
                                                                           teacher_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    run_dir, url, port = live_review
    shots = Path(os.environ.get("REVIEW_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    driver = browser(tmp_path)
    wait = WebDriverWait(driver, 15)
    try:
        driver.get(url)
        assert "convoforge review" in driver.title and driver.find_elements(By.CSS_SELECTOR, "svg rect")
        driver.save_screenshot(str(shots / "run.png"))
        driver.get(url + "stage/dedup_near")  # filter by a drop reason in the form
        Select(driver.find_element(By.ID, "reason")).select_by_visible_text("near_duplicate")
        driver.find_element(By.ID, "apply").click()
        wait.until(ec.url_contains("reason=near_duplicate"))
        reasons = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".row .reason")]
        assert reasons and all(r.startswith("near_duplicate") for r in reasons)
        driver.save_screenshot(str(shots / "rows.png"))
        driver.get(url + "pairs")
        pairs = driver.find_elements(By.CSS_SELECTOR, ".pair")
        assert len(pairs) >= 2, "the run made fewer than two pairs"
        keys = [p.get_attribute("data-id") for p in pairs[:2]]
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("4")  # the first pair: both bad
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".pair")[0].get_attribute("data-label") == "both_bad")
        body.send_keys("j")
        body.send_keys("2")  # the second: the rejected answer is better
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".pair")[1].get_attribute("data-label")
                   == "rejected_better")
        driver.save_screenshot(str(shots / "pairs.png"))
        driver.refresh()  # the labels came from the server, not from the page
        shown = {p.get_attribute("data-id"): p.find_element(By.CSS_SELECTOR, ".current").text
                 for p in driver.find_elements(By.CSS_SELECTOR, ".pair")}
        assert shown[keys[0]] == "both_bad" and shown[keys[1]] == "rejected_better"
        for page in ("dedup", "quarantine"):
            driver.get(url + page)
            assert driver.find_elements(By.CSS_SELECTOR, "main h1")
            driver.save_screenshot(str(shots / f"{page}.png"))
    finally:
        driver.quit()
    assert all((shots / f"{n}.png").stat().st_size > 5000 for n in ("run", "rows", "pairs", "dedup", "quarantine"))
    made = L.latest(run_dir, "pair")
    assert {made[("pair", k)].reviewer for k in keys} == {"tester"}

    overrides = judged_run[1]
    before = pl.read_parquet(sorted((run_dir / "export" / "data").glob("*_prefs-*.parquet")))
    run_build(run_dir, *overrides, server=teacher_server, recipe="ultrafeedback")
    stages = report(run_dir)
    assert stages["export"]["status"] == "ran" and stages["binarize"]["status"] == "skipped"  # only the export
    after = pl.read_parquet(sorted((run_dir / "export" / "data").glob("*_prefs-*.parquet")))
    assert after.height == before.height - 1  # both bad: gone
    quarantine = pl.read_parquet(run_dir / "quarantine.parquet")
    assert "human: both bad" in quarantine["reason"].to_list()
    swapped = [r for r in before.to_dicts()
               if L.pair_key(r["prompt_id"], r["chosen"], r["rejected"]) == keys[1]][0]
    now = after.filter(pl.col("prompt_id") == swapped["prompt_id"]).to_dicts()
    assert any(r["chosen"] == swapped["rejected"] and r["score_chosen"] == swapped["score_rejected"] for r in now)
    card = (run_dir / "export" / "README.md").read_text()
    assert "## Human review" in card and "2 preference pairs reviewed" in card
    again = run_build(run_dir, *overrides, server=teacher_server, recipe="ultrafeedback")
    assert report(run_dir)["export"]["status"] == "skipped", again.stdout  # no label changed: nothing to do



def test_a_conversation_dropped_by_a_reviewer_leaves_the_export_with_the_note(tmp_path):
    source = ROOT / "tests" / "data" / "dedup" / "paraphrases.jsonl"
    run_dir = tmp_path / "dedup"
    run_build(run_dir, f"sources={source}", recipe="dedup")
    exported = pl.read_parquet(sorted((run_dir / "export" / "data").glob("*.parquet")))
    victim = exported["id"][0]
    web = client(run_dir)
    page = web.get("/stage/export").text
    assert f'data-id="{victim}"' in page and 'data-label="drop"' in page  # the row carries its label buttons
    stored = web.post("/api/labels", json={"target": "row", "row_id": victim, "label": "drop", "note": "off topic"},
                      headers=WRITE)
    assert stored.status_code == 200
    run_build(run_dir, f"sources={source}", recipe="dedup")
    stages = report(run_dir)
    assert stages["export"]["status"] == "ran" and stages["export"]["dropped"] == {"human": 1}
    assert stages["dedup_near"]["status"] == "skipped"
    after = pl.read_parquet(sorted((run_dir / "export" / "data").glob("*.parquet")))
    assert after.height == exported.height - 1 and victim not in after["id"].to_list()
    quarantine = pl.read_parquet(run_dir / "quarantine.parquet")
    assert quarantine.filter(pl.col("reason") == "human: dropped (off topic)").height == 1
    assert "1 conversations reviewed" in (run_dir / "export" / "README.md").read_text()
    L.record(run_dir, "row", victim, "keep")  # a changed mind brings it back
    run_build(run_dir, f"sources={source}", recipe="dedup")
    assert pl.read_parquet(sorted((run_dir / "export" / "data").glob("*.parquet"))).height == exported.height


def test_a_refresh_root_is_reviewed_through_its_latest_build_and_other_folders_are_refused(tmp_path):
    from pipelines.review.data import NotFound, resolve_run

    root = tmp_path / "refresh"
    for version in ("v1", "v2", "v10"):
        (root / "work" / version).mkdir(parents=True)
        (root / "work" / version / "report.json").write_text("{}")
    (root / "manifest.json").write_text("{}")
    assert resolve_run(root) == (root / "work" / "v10").resolve()  # by number, not by name
    with pytest.raises(NotFound, match="neither a run directory"):
        resolve_run(tmp_path / "work")
    proc = subprocess.run([sys.executable, "-m", "pipelines.review", str(tmp_path / "nothing")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "neither a run directory" in proc.stderr and "Traceback" not in proc.stderr


def test_hostile_rows_and_requests_are_cut_refused_or_named(tmp_path):
    from pipelines.core.errors import PipelineError
    from pipelines.core.stage import MESSAGES

    stage = tmp_path / "00_ingest"
    stage.mkdir()
    huge = "<script>alert(1)</script> " + "word " * 200_000 + "[x](javascript:alert(1))"
    pl.DataFrame({"id": ["a", "b"], "messages": pl.Series(
        [[{"role": "user", "content": huge}], [{"role": "user", "content": "ok \x00\ufffd \u202e bidi"}]],
        dtype=MESSAGES)}).write_parquet(stage / "part-00000.parquet")
    web = client(tmp_path)
    page = web.get("/stage/ingest")
    assert page.status_code == 200 and len(page.text) < 400_000  # a 1 MB turn is cut on the page
    assert "<script>alert" not in page.text and 'href="javascript:' not in page.text  # data is never markup
    assert "more characters (see the raw row)" in page.text
    too_big = web.post("/api/labels", content=b'{"note": "' + b"x" * 100_000 + b'"}', headers=WRITE)
    assert too_big.status_code == 413
    assert web.post("/api/labels", content=b"[1, 2", headers=WRITE).status_code == 400
    assert web.post("/api/labels", json=[1, 2], headers=WRITE).status_code == 400
    (tmp_path / L.FILE).write_bytes(b"not a database at all" * 100)
    with pytest.raises(PipelineError, match="is not a label database"):
        L.latest(tmp_path)


# The review app tried as a hostile user would (issue 30): each test below failed before its fix.

def test_every_answer_forbids_framing_remote_loads_and_sniffing(judged_run):
    web = client(judged_run[0])
    for answer in (web.get("/"), web.get("/pairs"), web.get("/static/review.js"), web.get("/files/nothing.png"),
                   web.get("/", headers={"Host": "evil.example"}),
                   web.post("/api/labels", json={}, headers={"Origin": "http://evil.example"})):
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        policy = dict(p.strip().split(" ", 1) for p in answer.headers["content-security-policy"].split(";"))
        assert policy["frame-ancestors"] == "'none'" and policy["default-src"] == "'self'"
        assert policy["img-src"] == "'self' data:"


def hostile_run(run_dir: Path, image_url: str) -> Path:
    """A run of one stage whose rows carry a remote markdown image and a bidi override, and a quarantine whose
    raw records are long unbroken strings."""
    from pipelines.core.stage import MESSAGES
    from schemas import QUARANTINE

    stage = run_dir / "00_ingest"
    stage.mkdir(parents=True)
    pl.DataFrame({"id": ["img", "bidi"], "messages": pl.Series([
        [{"role": "user", "content": f"look ![b]({image_url}) here"}],
        [{"role": "user", "content": "[\u202eevil] and then"}]], dtype=MESSAGES)}).write_parquet(
        stage / "part-00000.parquet")
    rows = [{"stage": "00_ingest", "source": "x" * 400, "locator": "f" * 300 + ".jsonl:7",
             "reason": "bad_json: " + "y" * 500, "raw": "z" * 5000}]
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows, schema=QUARANTINE), run_dir / "quarantine.parquet")
    return run_dir


class Listener:
    """A loopback HTTP server that records every path asked of it (a tracker, or an intranet service)."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append(self.path)
                page = getattr(self.server, "page", b"")
                self.send_response(200)
                self.send_header("content-type", "text/html" if page else "image/png")
                self.end_headers()
                self.wfile.write(page or PNG)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_in_a_browser_a_framing_site_gets_nothing_and_data_fetches_nothing(live_review, tmp_path):
    from selenium.webdriver.common.by import By

    run_dir, url, port = live_review
    tracker, attacker = Listener(), Listener()
    attacker.server.page = f'<iframe id="f" src="{url}pairs" width="900" height="600"></iframe>'.encode()
    hostile = hostile_run(tmp_path / "hostile", tracker.url + "/x.png")
    driver = browser(tmp_path)
    try:
        driver.get(attacker.url + "/")  # another origin frames the app, to make a click in it store a label
        time.sleep(1.0)
        driver.switch_to.frame(driver.find_element(By.ID, "f"))
        assert not driver.find_elements(By.CSS_SELECTOR, ".pair button"), "the app rendered inside another site"
        driver.switch_to.default_content()
        with serving(hostile) as (_, hostile_url, _port):
            driver.get(hostile_url + "stage/ingest")
            assert driver.find_elements(By.CSS_SELECTOR, ".row")
            time.sleep(0.5)
            links = [a.text for a in driver.find_elements(By.CSS_SELECTOR, ".content a")]
            assert "[image: b]" in links  # shown as a link to follow, not fetched
            content = driver.find_elements(By.CSS_SELECTOR, ".row .content")[1]
            assert driver.execute_script("return getComputedStyle(arguments[0]).unicodeBidi", content) == "isolate"
            driver.get(hostile_url + "quarantine")  # long unbroken records stay inside a 1,400 px window
            assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        driver.quit()
        tracker.close()
        attacker.close()
    assert tracker.seen == [], "a data row made the reviewer's browser fetch a URL"
    assert L.latest(run_dir) == {}


def test_raw_rows_show_bidi_controls_and_stages_without_text_are_searched_or_say_so(tmp_path):
    hostile = hostile_run(tmp_path / "run", "http://127.0.0.1:9/x.png")
    web = client(hostile)
    page = web.get("/stage/ingest").text
    raw = re.findall(r"<pre>(.*?)</pre>", page, flags=re.S)
    assert any("\\u202e" in r for r in raw) and not any("\u202e" in r for r in raw)  # the raw view names it
    assert 'href="http://127.0.0.1:9/x.png"' in page and "<img" not in page
    ids = tmp_path / "run" / "01_ids"
    ids.mkdir()
    pl.DataFrame({"id": ["alpha-1", "beta-2"], "n": [1, 2]}).write_parquet(ids / "part-00000.parquet")
    found = web.get("/stage/ids?q=beta").text  # no text column: its string columns are searched
    assert "beta-2" in found and "alpha-1" not in found and "filters do not apply" not in found
    numbers = tmp_path / "run" / "02_numbers"
    numbers.mkdir()
    pl.DataFrame({"n": [1, 2]}).write_parquet(numbers / "part-00000.parquet")
    assert "the text and length filters do not apply here" in web.get("/stage/numbers?q=x").text


def test_the_dedup_diff_is_bounded_and_pages_leave_the_event_loop_free(tmp_path):
    import inspect

    from pipelines.review import app as review_app

    loop = "I am sorry but I cannot help with that request because it loops".split()
    first = " ".join(loop[i % len(loop)] for i in range(20_000))
    second = " ".join(loop[i % len(loop)] for i in range(19_990))
    source = tmp_path / "loop.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in (first, second, "something else entirely")))
    run_dir = tmp_path / "loop"
    run_build(run_dir, f"sources={source}", "kind=text", recipe="dedup")
    assert pl.read_parquet(run_dir / "dedup" / "clusters.parquet").height == 2  # the two loops are one cluster
    a, b, left = review_app.diff_words(first, second)
    assert len(a) <= review_app.DIFF_WORDS and len(b) <= review_app.DIFF_WORDS and left == 39_990 - len(a) - len(b)
    worst = ["sorry"] * 2_000  # one word repeated: the costliest diff there is
    a, b, _ = review_app.diff_words(" ".join(worst), " ".join(worst))
    assert len(a) * len(b) <= review_app.DIFF_WORK
    page = client(run_dir).get("/dedup").text
    assert "estimated Jaccard" in page and "words are not compared" in page and len(page) < 200_000
    app = review_app.create_app(run_dir, TOKEN, {"testserver"})
    pages = [r for r in app.routes if getattr(r, "path", "") not in ("/api/labels", "/static")]
    assert pages and not [r.path for r in pages if inspect.iscoroutinefunction(r.endpoint)]  # run in the pool


def test_bound_to_every_address_it_answers_by_ip_and_allowed_names(judged_run, tmp_path):
    from pipelines.review.__main__ import interface_addresses

    outside = [a for a in interface_addresses() if ":" not in a and not a.startswith("127.")]
    with serving(judged_run[0], "--host", "0.0.0.0", "--allow-host", "review.example") as (lines, url, port):
        assert f"?token=" in url and urlsplit(url).hostname == (outside[0] if outside else "127.0.0.1")
        token = url.split("token=")[1]
        for host in [*outside, "review.example", "127.0.0.1"]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", f"/?token={token}", headers={"Host": f"{host}:{port}"})
            assert conn.getresponse().status == 303, host  # accepted: on to the page, with the cookie
            conn.close()
        assert raw_get(port, "/", host="evil.example") == 400  # DNS rebinding is still refused
    assert outside, "this machine has no address beyond loopback to connect by"


def test_a_row_label_on_a_preference_run_drops_the_pair_or_is_not_offered(judged_run, teacher_server, tmp_path):
    run_dir = tmp_path / "uf"
    shutil.copytree(judged_run[0], run_dir)
    web = client(run_dir)
    assert 'data-target="row"' not in web.get("/stage/prompts").text  # its ids never reach the export
    assert "do not reach the export" in web.get("/stage/prompts").text
    page = web.get("/stage/binarize?status=kept").text
    ids = re.findall(r'data-target="row" data-id="(\w+)"', page)
    assert ids and "python -m pipelines.build ultrafeedback --run-dir" in page  # what to run, on the page
    before = pl.read_parquet(sorted((run_dir / "export" / "data").glob("*_prefs-*.parquet")))
    assert web.post("/api/labels", json={"target": "row", "row_id": ids[0], "label": "drop", "note": "off topic"},
                    headers=WRITE).status_code == 200
    assert "reach the exported dataset at the next build" in web.get("/").text
    run_build(run_dir, *judged_run[1], server=teacher_server, recipe="ultrafeedback")
    assert report(run_dir)["export"]["status"] == "ran"
    after = pl.read_parquet(sorted((run_dir / "export" / "data").glob("*_prefs-*.parquet")))
    assert after.height == before.height - 1 and ids[0] not in after.join(
        pl.read_parquet(sorted((run_dir / "06_binarize").glob("part-*.parquet"))).select("id", "prompt_id", "chosen",
                                                                                        "rejected"),
        on=["prompt_id", "chosen", "rejected"], how="left")["id"].to_list()
    quarantine = pl.read_parquet(run_dir / "quarantine.parquet")
    assert quarantine.filter(pl.col("reason") == "human: dropped (off topic)").height == 1
    assert "1 preference pairs reviewed on the rows pages; 1 dropped" in (run_dir / "export" / "README.md").read_text()
    home = web.get("/").text
    assert "The export has every label made so far" in home
    assert "when it last ran" in home and "the last build took" in home  # skipped stages' seconds are marked


def test_a_pointwise_pair_shows_no_ordering_agreement(tmp_path):
    stage = tmp_path / "00_binarize"
    stage.mkdir()
    turn = [{"role": "user", "content": "q"}]
    pl.DataFrame({"prompt_id": ["p1", "p2"], "prompt": ["q", "q"], "chosen": [turn, turn], "rejected": [turn, turn],
                  "ordering_agreement": [None, 0.5]}).write_parquet(stage / "part-00000.parquet")
    page = client(tmp_path).get("/pairs").text
    assert page.count("agreement between orderings") == 1 and "agreement between orderings 0.50" in page


def test_a_note_survives_a_reload_and_a_second_label(live_review, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    run_dir, url, port = live_review
    driver = browser(tmp_path)
    try:
        driver.get(url + "pairs")
        first = driver.find_elements(By.CSS_SELECTOR, ".pair")[0]
        key = first.get_attribute("data-id")
        first.find_element(By.CSS_SELECTOR, "input.note").send_keys("the second answer invents a date")
        first.find_element(By.CSS_SELECTOR, "button[data-label=tie]").click()
        WebDriverWait(driver, 15).until(lambda d: L.latest(run_dir).get(("pair", key)) is not None)
        driver.refresh()
        note = driver.find_elements(By.CSS_SELECTOR, ".pair")[0].find_element(By.CSS_SELECTOR, "input.note")
        assert note.get_attribute("value") == "the second answer invents a date"  # shown after a reload
        driver.find_element(By.TAG_NAME, "body").send_keys("4")  # a second decision, by keyboard
        WebDriverWait(driver, 15).until(lambda d: L.latest(run_dir)[("pair", key)].label == "both_bad")
    finally:
        driver.quit()
    assert L.latest(run_dir)[("pair", key)].note == "the second answer invents a date"
    web = client(run_dir)  # an API write without a note keeps the note too
    assert web.post("/api/labels", json={"target": "pair", "row_id": key, "label": "tie"},
                    headers=WRITE).json()["note"] == "the second answer invents a date"


def test_hostile_label_bodies_are_400s(tmp_path):
    (tmp_path / "00_ingest").mkdir()
    web = TestClient(create_app(tmp_path, TOKEN, {"testserver"}), raise_server_exceptions=False)
    deep = b"[" * 5_000 + b"]" * 5_000
    assert web.post("/api/labels", content=deep, headers=WRITE).status_code == 400
    assert web.post("/api/labels", content=b'{"target": ' + deep + b"}", headers=WRITE).status_code == 400
    assert web.post("/api/labels", json="a string", headers=WRITE).status_code == 400
    assert web.post("/api/labels", json={"target": "row", "row_id": "x", "label": "drop", "note": {"a": 1}},
                    headers=WRITE).status_code == 400  # a note is a string, not whatever JSON holds
    assert web.get("/files/" + "n" * 300 + ".png").status_code == 404
    for page in ("/stage/ingest?page=99999999999999999999&min_chars=-99999999999999999999", "/dedup?page=-1",
                 "/pairs?page=99999999999999999999", "/quarantine?page=99999999999999999999"):
        assert web.get(page).status_code == 200, page


def test_a_label_the_disk_cannot_take_is_a_named_error_not_a_500(tmp_path):
    (tmp_path / "00_ingest").mkdir()
    (tmp_path / L.FILE).write_bytes(b"not a database at all" * 100)  # damaged (a full tmpfs gave 503 too, by hand)
    web = TestClient(create_app(tmp_path, TOKEN, {"testserver"}), raise_server_exceptions=False)
    answer = web.post("/api/labels", json={"target": "row", "row_id": "x", "label": "drop"}, headers=WRITE)
    assert answer.status_code == 503 and "is not a label database" in answer.json()["error"]
