"""The review web app: Starlette routes, Jinja2 templates, one small script; every asset is served by the app.

Pages: `/` the run (stage table, charts, card), `/stage/<name>` a stage's rows, `/pairs`, `/dedup`, `/quarantine`,
`/eval/<suite>` a `pipelines.eval` directory's items (model and baseline side by side, filtered by verdict);
`POST /api/labels` stores a label; `/files/export/pictures/<name>` serves the card's pictures (nothing else of the run).
Pages that read data are plain `def` handlers, so Starlette runs them in its thread pool, off the event loop.

Security: the app answers only to the Host names it was started for (a DNS-rebinding page cannot reach it). Label
writes need the session token (`X-Review-Token`, constant-time compared) and an `Origin` (or `Referer`) equal to the
app's own, so another site open in the same browser cannot label. When bound beyond loopback, every page needs the
token too: `?token=...` once, then an HttpOnly SameSite=Strict cookie. Every response carries `HEADERS`: no page may
be framed (clickjacking), nothing is loaded from another origin (a data row's markdown image cannot make the
reviewer's browser fetch a URL; images other than the card's pictures are rendered as links), no Referer leaves.
"""

from __future__ import annotations

import difflib
import hmac
import html
import json
import math
import re
import sqlite3
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from pipelines.core import labels
from pipelines.core.errors import PipelineError
from pipelines.review import data as D

HERE = Path(__file__).parent
COOKIE = "review_token"
MAX_BODY = 16_384  # bytes of one label request (a note is at most labels.MAX_NOTE characters)
SHOWN = 20_000  # characters of one text shown on a page; the rest is one click away in the raw row
DIFF_WORDS = 2_000  # words of each text a dedup diff compares
DIFF_WORK = 1_000_000  # bound on the diff's work: sum over words of (count in one text) x (count in the other)
PICTURES = re.compile(r"export/pictures/[A-Za-z0-9_.-]{1,128}\.(png|svg|jpg)|report\.png")  # card pictures, a chart
OWN_IMAGE = "/files/export/pictures/"
BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")  # direction marks, embeddings, overrides
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages hold the token and labels
}


def _image_as_link(self, tokens, idx, options, env) -> str:
    """A markdown image: shown when it is one of the card's pictures, else a link (data must not make the
    reviewer's browser fetch a URL)."""
    token = tokens[idx]
    src, alt = token.attrGet("src") or "", self.renderInlineAsText(token.children or [], options, env)
    if src.startswith(OWN_IMAGE) and ".." not in src:
        return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">'
    return f'<a href="{html.escape(src)}" rel="noopener noreferrer nofollow">[image: {html.escape(alt or src)}]</a>'


MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
MARKDOWN.add_render_rule("image", _image_as_link)


def cut(text: str | None, limit: int = SHOWN) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit] + f"\n... {len(text) - limit:,} more characters"


def markdown(text: str) -> Markup:
    """Markdown to HTML with raw HTML escaped (data is never trusted); a huge text is cut at SHOWN characters."""
    text = text or ""
    if len(text) > SHOWN:
        text = text[:SHOWN] + f"\n\n*... {len(text) - SHOWN:,} more characters (see the raw row)*"
    return Markup(MARKDOWN.render(text))


def raw_json(value, limit: int = 5 * SHOWN) -> str:
    """A row as indented JSON for the raw view, cut at `limit` characters; bidi controls written as `\\u202e`, so
    a row cannot reorder what the reviewer reads."""
    text = json.dumps(value, indent=1, ensure_ascii=False, default=str)
    text = BIDI.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text if len(text) <= limit else text[:limit] + f"\n... {len(text) - limit:,} more characters"


def diff_words(kept: str, other: str) -> tuple[list[str], list[str], int]:
    """The words of each text a diff compares, cut so its work stays bounded (`DIFF_WORDS`, `DIFF_WORK`: a looping
    answer repeats few words many times, and difflib's cost grows with the product of their counts), and how many
    words were left out."""
    a, b = (kept or "").split(), (other or "").split()
    total = len(a) + len(b)
    a, b = a[:DIFF_WORDS], b[:DIFF_WORDS]
    counts = Counter(b)
    work = sum(n * counts[w] for w, n in Counter(a).items())
    if work > DIFF_WORK:
        keep = math.sqrt(DIFF_WORK / work)
        a, b = a[:int(len(a) * keep)], b[:int(len(b) * keep)]
    return a, b, total - len(a) - len(b)


def word_diff(kept: str, other: str) -> Markup:
    """`other` with the words it lacks from `kept` struck and the words it adds marked (of their first words)."""
    a, b, left = diff_words(kept, other)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            out.append(f"<del>{html.escape(' '.join(a[i1:i2]))}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{html.escape(' '.join(b[j1:j2]))}</ins>")
        if op == "equal":
            out.append(html.escape(" ".join(a[i1:i2])))
    if left:
        out.append(f"<p class='muted'>the diff compares the first {len(a):,} and {len(b):,} words; {left:,} more "
                   f"words are not compared</p>")
    return Markup(" ".join(out))


def bar_chart(items: list[tuple[str, float]], title: str, unit: str = "rows") -> Markup:
    """A horizontal bar chart as inline SVG (no script, no library)."""
    if not items:
        return Markup(f"<p class='muted'>{html.escape(title)}: nothing to draw</p>")
    top = max(v for _, v in items) or 1
    row, width, label_w = 22, 560, 190
    bars = []
    for k, (name, value) in enumerate(items):
        w = max(1, int((width - label_w - 70) * value / top))
        y = k * row
        bars.append(f"<text x='{label_w - 6}' y='{y + 15}' text-anchor='end'>{html.escape(str(name)[:32])}</text>"
                    f"<rect x='{label_w}' y='{y + 3}' width='{w}' height='{row - 6}'></rect>"
                    f"<text x='{label_w + w + 4}' y='{y + 15}'>{value:,.0f}</text>")
    return Markup(f"<figure class='chart'><figcaption>{html.escape(title)} ({unit})</figcaption>"
                  f"<svg role='img' aria-label='{html.escape(title)}' width='{width}' height='{row * len(items)}'>"
                  f"{''.join(bars)}</svg></figure>")


def page_link(request: Request, **changes) -> str:
    query = {**request.query_params, **changes}
    return f"{request.url.path}?{urlencode({k: v for k, v in query.items() if v not in (None, '')})}"


class Guard(BaseHTTPMiddleware):
    """Host allow-list, the token on pages when bound beyond loopback, token + same origin on writes; `HEADERS` on
    every answer, refusals included."""

    def __init__(self, app, token: str, hosts: set[str], pages_need_token: bool):
        super().__init__(app)
        self.token, self.hosts, self.pages_need_token = token, {h.lower() for h in hosts}, pages_need_token

    def _has_token(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    async def dispatch(self, request: Request, call_next):
        response = await self._checked(request, call_next)
        response.headers.update(HEADERS)
        return response

    async def _checked(self, request: Request, call_next):
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if host not in self.hosts:
            return PlainTextResponse(f"unknown host {host!r}: start the review with --allow-host {host or 'NAME'} "
                                     f"to reach it by this name", status_code=400)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin") or request.headers.get("referer") or ""
            own = f"{request.url.scheme}://{request.headers.get('host')}"
            if urlsplit(origin)._replace(path="", query="", fragment="").geturl() != own:
                return JSONResponse({"error": "cross-origin write refused"}, status_code=403)
            if not self._has_token(request.headers.get("x-review-token")):
                return JSONResponse({"error": "a label needs the review token"}, status_code=401)
            return await call_next(request)
        if self.pages_need_token and not request.url.path.startswith("/static/") and request.url.path != "/favicon.ico":
            given = request.query_params.get("token")
            if self._has_token(given):
                rest = {k: v for k, v in request.query_params.items() if k != "token"}
                response = RedirectResponse(f"{request.url.path}?{urlencode(rest)}" if rest else request.url.path,
                                            status_code=303)
                response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
                return response
            if not self._has_token(request.cookies.get(COOKIE)):
                return PlainTextResponse("this review needs its token: open the link printed when it started",
                                         status_code=401)
        return await call_next(request)


def read_label(data: bytes) -> dict:
    """A label request's JSON object; ValueError for anything else (bad JSON, too deep, not an object)."""
    try:
        body = json.loads(data)
    except RecursionError:
        raise ValueError("the label's JSON is nested too deep") from None
    if not isinstance(body, dict):
        raise ValueError("a label is a JSON object: {target, row_id, label, note}")
    wrong = [k for k in ("target", "row_id", "label", "note") if body.get(k) is not None and not isinstance(body[k], str)]
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: a string")
    return body


def create_app(run_dir: Path, token: str, hosts: set[str], pages_need_token: bool = False,
               reviewer: str = "") -> Starlette:
    run_dir = D.resolve_run(run_dir)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters.update(md=markdown, tojson_pretty=raw_json, cut=cut)
    templates.env.globals.update(word_diff=word_diff, page_link=page_link, token=token, run_dir=str(run_dir),
                                 stages=lambda: list(D.stage_dirs(run_dir)),
                                 rebuild=lambda: D.rebuild_command(run_dir),
                                 eval_suites=lambda: D.eval_suites(run_dir))

    def render(request: Request, template: str, **values) -> Response:
        return templates.TemplateResponse(request, template, values)

    # Plain `def` handlers: Starlette runs them in its thread pool, so a slow page never holds the others up.
    def overview(request: Request) -> Response:
        if not (run_dir / "report.json").exists() and D.eval_suites(run_dir):  # an eval directory
            return RedirectResponse("/eval", status_code=303)
        if D.experiment_name(run_dir):
            return RedirectResponse("/experiment", status_code=303)
        rep = D.report(run_dir)
        rows = rep.get("stages", [])
        drops: dict[str, int] = {}
        for r in rows:
            for reason, n in r.get("dropped", {}).items():
                drops[reason] = drops.get(reason, 0) + n
        card = D.card_text(run_dir).replace("](pictures/", "](/files/export/pictures/")
        made = labels.latest(run_dir)
        return render(request, "run.html", report=rep, rows=rows, card=card, labelled=len(made),
                      applied=D.labels_in_export(run_dir),
                      drops_chart=bar_chart(sorted(drops.items(), key=lambda kv: -kv[1]), "dropped by reason"),
                      flow_chart=bar_chart([(r["stage"], r["rows_out"]) for r in rows], "rows out of each stage"))

    def stage_rows(request: Request) -> Response:
        name, q = request.path_params["name"], _query(request)
        try:
            lazy = D.stage_scan(run_dir, name, q.status)
        except D.NotFound as e:
            return PlainTextResponse(str(e), status_code=404)
        page = D.rows_page(lazy, q)
        reasons, sources = D.facets(D.stage_scan(run_dir, name))
        made = labels.latest(run_dir, "row")
        exported = D.reaching_export(run_dir, [str(row["id"]) for row in page.rows if row.get("id")])
        for row in page.rows:
            label = made.get(("row", str(row.get("id"))))
            row["_label"] = None if label is None else label.label
            row["_note"] = "" if label is None else label.note
            row["_labels"] = str(row.get("id")) in exported
        return render(request, "rows.html", name=name, page=page, q=q, reasons=reasons, sources=sources,
                      pages=max(1, -(-page.total // q.size)), exported=exported, has_export=D.has_export(run_dir))

    def pairs(request: Request) -> Response:
        page = _int(request.query_params.get("page"), 1)
        show = request.query_params.get("show", "all")
        show = show if show in ("all", "unlabelled", "labelled") else "all"
        order = "unsure" if request.query_params.get("order") == "unsure" else "judge"
        stage, rows, total = D.pairs_page(run_dir, page, show=show, order=order)
        return render(request, "pairs.html", rows=rows, total=total, page=page, pages=max(1, -(-total // 5)),
                      show=show, order=order, stage=stage, progress=D.label_progress(run_dir))

    def dedup(request: Request) -> Response:
        page = _int(request.query_params.get("page"), 1)
        clusters, total = D.clusters_page(run_dir, page)
        return render(request, "dedup.html", clusters=clusters, total=total, page=page, pages=max(1, -(-total // 10)))

    def evaluation(request: Request) -> Response:
        suites = D.eval_suites(run_dir)
        suite = request.path_params.get("suite") or (suites[0] if suites else "")
        verdict, page = request.query_params.get("verdict", ""), max(1, _int(request.query_params.get("page"), 1))
        try:
            found = D.eval_page(run_dir, suite, verdict, page)
        except D.NotFound as e:
            return PlainTextResponse(str(e), status_code=404)
        return render(request, "eval.html", suites=suites, found=found, verdict=verdict, page=page,
                      pages=max(1, -(-found["total"] // D.PAGE)),
                      report_md=(run_dir / "report.md").read_text(errors="replace"))

    def experiment(request: Request) -> Response:
        name = D.experiment_name(run_dir)
        if not name:
            return PlainTextResponse("not an experiment directory (no report.json of pipelines.experiment)", 404)
        text = (run_dir / "report.md").read_text(errors="replace").replace("![scores](report.png)", "")
        return render(request, "experiment.html", name=name, report_md=text)

    def quarantine(request: Request) -> Response:
        q = _query(request)
        page = D.quarantine_page(run_dir, q)
        return render(request, "quarantine.html", page=page, q=q, pages=max(1, -(-page.total // q.size)))

    async def post_label(request: Request) -> Response:
        data = b""
        async for chunk in request.stream():  # read no more than a label can be
            data += chunk
            if len(data) > MAX_BODY:
                return JSONResponse({"error": f"a label is at most {MAX_BODY} bytes"}, status_code=413)
        try:
            body = read_label(data)
            note = body.get("note")  # absent: the row's note so far is kept
            made = await run_in_threadpool(labels.record, run_dir, str(body.get("target", "")),
                                           str(body.get("row_id", "")), str(body.get("label", "")),
                                           None if note is None else str(note), reviewer)
        except ValueError as e:  # bad JSON or a label the store refuses
            return JSONResponse({"error": str(e)}, status_code=400)
        except (PipelineError, sqlite3.Error, OSError) as e:  # a damaged database, a full disk: the page says so
            return JSONResponse({"error": f"{labels.FILE}: {e}"}, status_code=503)
        return JSONResponse({"stored": made.label, "row_id": made.row_id, "note": made.note,
                             "created": made.created})

    def files(request: Request) -> Response:
        """The card's pictures, and nothing else of the run (not its cache, labels or config)."""
        path = request.path_params["path"]
        if not PICTURES.fullmatch(path):
            return PlainTextResponse("not a picture of this run's card", status_code=404)
        wanted = (run_dir / path).resolve()
        if not wanted.is_relative_to(run_dir) or not wanted.is_file():
            return PlainTextResponse("not a picture of this run's card", status_code=404)
        return FileResponse(wanted)

    def favicon(request: Request) -> Response:
        return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml")

    routes = [
        Route("/", overview), Route("/stage/{name}", stage_rows), Route("/pairs", pairs), Route("/dedup", dedup),
        Route("/quarantine", quarantine), Route("/api/labels", post_label, methods=["POST"]),
        Route("/eval", evaluation), Route("/eval/{suite}", evaluation), Route("/experiment", experiment),
        Route("/files/{path:path}", files), Route("/favicon.ico", favicon),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(Guard, token=token, hosts=hosts,
                                                           pages_need_token=pages_need_token)])


def _int(value: str | None, default: int | None) -> int | None:
    """A number from the query (a page, a length), within what a page can ask for; `default` when it is none."""
    try:
        return max(-10**12, min(10**12, int(value))) if value not in (None, "") else default
    except ValueError:
        return default


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _query(request: Request) -> D.RowQuery:
    p = request.query_params
    q = D.RowQuery(status=p.get("status", "all") if p.get("status") in D.STATUSES else "all",
                   reason=p.get("reason", ""), source=p.get("source", ""), search=p.get("q", ""),
                   min_chars=_int(p.get("min_chars"), None), max_chars=_int(p.get("max_chars"), None),
                   score=p.get("score", ""), score_min=_float(p.get("score_min")), sort=p.get("sort", ""),
                   descending=p.get("desc") == "1", page=max(1, _int(p.get("page"), 1) or 1))
    return q
