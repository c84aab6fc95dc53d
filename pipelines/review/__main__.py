"""`python -m pipelines.review RUN_DIR [--host H] [--port P] [--allow-host NAME] [--reviewer NAME]`: look at a run
and label it.

Serves the review app (`pipelines.review.app`) on 127.0.0.1 and a free port, printed. With `--host` set beyond
loopback every page needs the token: printed once as part of the link, or taken from `$PIPELINES_REVIEW_TOKEN`.
The app answers to the names and addresses it is reached by: loopback, the bound address (every address of this
machine's interfaces for 0.0.0.0 or ::), the host name, and each `--allow-host` (a DNS name or a proxy's).
Labels go to `RUN_DIR/labels.sqlite`; `python -m pipelines.build` then exports again with them.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
from pathlib import Path

import psutil
import uvicorn

from pipelines.review.app import create_app
from pipelines.review.data import NotFound, resolve_run

TOKEN_ENV = "PIPELINES_REVIEW_TOKEN"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def interface_addresses() -> list[str]:
    """This machine's interface addresses, IPv4 first, loopback last (IPv6 link-local ones left out)."""
    found = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
             if a.family in (socket.AF_INET, socket.AF_INET6) and "%" not in a.address]
    return sorted(set(found), key=lambda a: (a in LOOPBACK or a.startswith("127."), ":" in a, a))


def link_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.review", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (runs/<recipe>) or a refresh root")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (beyond loopback, pages need the token)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="another host name the app answers to (a DNS name, a proxy's); repeatable")
    parser.add_argument("--reviewer", default=os.environ.get("USER", ""), help="name stored with each label")
    args = parser.parse_args(argv)
    try:
        run_dir = resolve_run(args.run_dir)
    except NotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    loopback = args.host in LOOPBACK
    token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)
    everywhere = args.host in ("0.0.0.0", "::")
    addresses = [a for a in interface_addresses() if args.host == "::" or ":" not in a] if everywhere else [args.host]
    hosts = LOOPBACK | set(addresses) | {h.strip().lower() for h in args.allow_host if h.strip()}
    if everywhere:
        hosts |= {socket.gethostname(), socket.getfqdn()}
    port = args.port or free_port(args.host)
    app = create_app(run_dir, token, hosts, pages_need_token=not loopback, reviewer=args.reviewer)
    query = f"?token={token}" if not loopback and TOKEN_ENV not in os.environ else ""
    links = [f"http://{link_host(a)}:{port}/{query}" for a in addresses]
    print(f"reviewing {run_dir}\nopen {links[0]}" + ("" if loopback else "  (pages need the token)"), flush=True)
    if len(links) > 1:
        print("also at " + "  ".join(links[1:]), flush=True)
    uvicorn.run(app, host=args.host, port=port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
