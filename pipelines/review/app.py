"""The review web app: Starlette routes, Jinja2 templates, one small script; every asset is served by the app.

Pages: `/` the run (stage table, charts, card), `/stage/<name>` a stage's rows, `/pairs`, `/dedup`, `/quarantine`;
`POST /api/labels` stores a label; `/files/<path>` serves a file of the run directory (the card's pictures).

Security: the app answers only to the Host names it was started for (a DNS-rebinding page cannot reach it). Label
writes need the session token (`X-Review-Token`, constant-time compared) and an `Origin` (or `Referer`) equal to the
app's own, so another site open in the same browser cannot label. When bound beyond loopback, every page needs the
token too: `?token=...` once, then an HttpOnly SameSite=Strict cookie. `/files` serves regular files under the run
directory only (no `..`, no symlink out).
"""

from __future__ import annotations

import difflib
import hmac
import html
import json
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from pipelines.core import labels
from pipelines.review import data as D

HERE = Path(__file__).parent
COOKIE = "review_token"
MAX_BODY = 16_384  # bytes of one label request (a note is at most labels.MAX_NOTE characters)
SHOWN = 20_000  # characters of one text shown on a page; the rest is one click away in the raw row
MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def markdown(text: str) -> Markup:
    """Markdown to HTML with raw HTML escaped (data is never trusted); a huge text is cut at SHOWN characters."""
    text = text or ""
    if len(text) > SHOWN:
        text = text[:SHOWN] + f"\n\n*... {len(text) - SHOWN:,} more characters (see the raw row)*"
    return Markup(MARKDOWN.render(text))


def raw_json(value, limit: int = 5 * SHOWN) -> str:
    """A row as indented JSON for the raw view, cut at `limit` characters."""
    text = json.dumps(value, indent=1, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + f"\n... {len(text) - limit:,} more characters"


def word_diff(kept: str, other: str) -> Markup:
    """`other` with the words it lacks from `kept` struck and the words it adds marked."""
    a, b = (kept or "").split(), (other or "").split()
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            out.append(f"<del>{html.escape(' '.join(a[i1:i2]))}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{html.escape(' '.join(b[j1:j2]))}</ins>")
        if op == "equal":
            out.append(html.escape(" ".join(a[i1:i2])))
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
    """Host allow-list, the token on pages when bound beyond loopback, token + same origin on writes."""

    def __init__(self, app, token: str, hosts: set[str], pages_need_token: bool):
        super().__init__(app)
        self.token, self.hosts, self.pages_need_token = token, hosts, pages_need_token

    def _has_token(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    async def dispatch(self, request: Request, call_next):
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
        if host not in self.hosts:
            return PlainTextResponse(f"unknown host {host!r}", status_code=400)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin") or request.headers.get("referer") or ""
            own = f"{request.url.scheme}://{request.headers.get('host')}"
            if urlsplit(origin)._replace(path="", query="", fragment="").geturl() != own:
                return JSONResponse({"error": "cross-origin write refused"}, status_code=403)
            if not self._has_token(request.headers.get("x-review-token")):
                return JSONResponse({"error": "a label needs the review token"}, status_code=401)
            return await call_next(request)
        if self.pages_need_token and not request.url.path.startswith("/static/"):
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


def create_app(run_dir: Path, token: str, hosts: set[str], pages_need_token: bool = False,
               reviewer: str = "") -> Starlette:
    run_dir = D.resolve_run(run_dir)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters.update(md=markdown, tojson_pretty=raw_json)
    templates.env.globals.update(word_diff=word_diff, page_link=page_link, token=token, run_dir=str(run_dir),
                                 stages=lambda: list(D.stage_dirs(run_dir)))

    def render(request: Request, template: str, **values) -> Response:
        return templates.TemplateResponse(request, template, values)

    async def overview(request: Request) -> Response:
        rep = D.report(run_dir)
        rows = rep.get("stages", [])
        drops: dict[str, int] = {}
        for r in rows:
            for reason, n in r.get("dropped", {}).items():
                drops[reason] = drops.get(reason, 0) + n
        card = D.card_text(run_dir).replace("](pictures/", "](/files/export/pictures/")
        made = labels.latest(run_dir)
        return render(request, "run.html", report=rep, rows=rows, card=card, labelled=len(made),
                      drops_chart=bar_chart(sorted(drops.items(), key=lambda kv: -kv[1]), "dropped by reason"),
                      flow_chart=bar_chart([(r["stage"], r["rows_out"]) for r in rows], "rows out of each stage"))

    async def stage_rows(request: Request) -> Response:
        name, q = request.path_params["name"], _query(request)
        try:
            lazy = D.stage_scan(run_dir, name, q.status)
        except D.NotFound as e:
            return PlainTextResponse(str(e), status_code=404)
        page = D.rows_page(lazy, q)
        reasons, sources = D.facets(D.stage_scan(run_dir, name))
        made = labels.latest(run_dir, "row")
        for row in page.rows:
            label = made.get(("row", str(row.get("id"))))
            row["_label"] = None if label is None else label.label
        return render(request, "rows.html", name=name, page=page, q=q, reasons=reasons, sources=sources,
                      pages=max(1, -(-page.total // q.size)))

    async def pairs(request: Request) -> Response:
        page = _int(request.query_params.get("page"), 1)
        show = request.query_params.get("show", "all")
        stage, rows, total = D.pairs_page(run_dir, page,
                                          show=show if show in ("all", "unlabelled", "labelled") else "all")
        return render(request, "pairs.html", rows=rows, total=total, page=page, pages=max(1, -(-total // 5)),
                      show=show, stage=stage)

    async def dedup(request: Request) -> Response:
        page = _int(request.query_params.get("page"), 1)
        clusters, total = D.clusters_page(run_dir, page)
        return render(request, "dedup.html", clusters=clusters, total=total, page=page, pages=max(1, -(-total // 10)))

    async def quarantine(request: Request) -> Response:
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
            body = json.loads(data)
            made = labels.record(run_dir, str(body.get("target", "")), str(body.get("row_id", "")),
                                 str(body.get("label", "")), str(body.get("note") or ""), reviewer)
        except (ValueError, AttributeError) as e:  # bad JSON or a label the store refuses
            return JSONResponse({"error": str(e)}, status_code=400)
        return JSONResponse({"stored": made.label, "row_id": made.row_id, "created": made.created})

    async def files(request: Request) -> Response:
        wanted = (run_dir / request.path_params["path"]).resolve()
        if not wanted.is_relative_to(run_dir) or not wanted.is_file():
            return PlainTextResponse("not a file of this run", status_code=404)
        return FileResponse(wanted)

    routes = [
        Route("/", overview), Route("/stage/{name}", stage_rows), Route("/pairs", pairs), Route("/dedup", dedup),
        Route("/quarantine", quarantine), Route("/api/labels", post_label, methods=["POST"]),
        Route("/files/{path:path}", files), Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(Guard, token=token, hosts=hosts,
                                                           pages_need_token=pages_need_token)])


def _int(value: str | None, default: int | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else default
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
