"""A fake Hugging Face Hub on 127.0.0.1 for tests: the endpoints `HfApi` and `snapshot_download` call to publish
and to download a dataset, with files sent inline ("regular" upload mode, so no LFS or Xet).

It records every request (method, path, Authorization header), the repos created, each commit (message, parent,
files with their bytes) and each tag, and can write the tree at any branch, tag or commit to a directory.

    with FakeHub(token="hf_...") as hub:   # hub.url goes into HF_ENDPOINT (read when huggingface_hub is imported)
        ...
        hub.checkout("ORG/NAME", "v2", dest)

Endpoints (repo type `models`, `datasets` or `spaces`):
    POST /api/repos/create                     {name, organization, type, visibility}; 409 if it exists
    GET  /api/whoami-v2
    POST /api/validate-yaml                    parses the card's YAML front matter
    GET  /api/{type}/{repo}/refs
    GET  /api/{type}/{repo}/revision/{rev}     repo info with siblings (snapshot_download)
    GET  /api/{type}/{repo}/tree/{rev}[/dir]   ?recursive=; one page
    POST /api/{type}/{repo}/preupload/{rev}    every file "regular", with the oid of the file already there
    POST /api/{type}/{repo}/commit/{rev}       NDJSON: header, file (base64), deletedFile, deletedFolder
    POST /api/{type}/{repo}/tag/{rev}          {tag, message}; 409 if the tag exists
    HEAD/GET /[{type}/]{repo}/resolve/{rev}/{path}   X-Repo-Commit, ETag, Content-Length
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
API = re.compile(r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/"
                 r"(?P<op>refs|revision|tree|preupload|commit|tag)(?:/(?P<rev>[^/]+)(?P<rest>/.*)?)?$")
RESOLVE = re.compile(r"^/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
WRITES = ("/api/repos/create", "/preupload/", "/commit/", "/tag/")


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    description: str
    added: dict[str, bytes]  # the files this commit added or changed
    deleted: list[str]
    tree: dict[str, bytes]  # every file at this commit


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    tag_messages: dict[str, str | None] = field(default_factory=dict)

    def commit(self, parent, message, description, added, deleted) -> Commit:
        tree = dict(self.resolve(parent).tree) if parent else {}
        for path in deleted:
            for key in [k for k in tree if k == path.rstrip("/") or k.startswith(path.rstrip("/") + "/")]:
                del tree[key]
        tree.update(added)
        digest = hashlib.sha1(json.dumps([parent, message, len(self.commits),
                                          sorted((p, git_blob_oid(b)) for p, b in tree.items())]).encode())
        commit = Commit(digest.hexdigest(), parent, message, description, added, deleted, tree)
        self.commits.append(commit)
        return commit

    def resolve(self, rev: str) -> Commit | None:
        oid = self.branches.get(rev) or self.tags.get(rev) or rev
        return next((c for c in self.commits if c.oid == oid or (len(rev) >= 7 and c.oid.startswith(rev))), None)

    @property
    def user_commits(self) -> list[Commit]:
        """The commits after the one made by create_repo."""
        return self.commits[1:]


class FakeHub:
    def __init__(self, token: str | None = None):
        self.token = token  # when set, writes need `Authorization: Bearer <token>`
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path with query, Authorization)
        self.created: list[dict] = []  # the bodies of repo create requests
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def checkout(self, repo_id: str, rev: str, dest: Path) -> Path:
        """Write the tree at branch, tag or commit `rev` to `dest`."""
        commit = self.repos[repo_id].resolve(rev)
        if commit is None:
            raise KeyError(f"{repo_id} has no revision {rev}")
        for path, data in commit.tree.items():
            (Path(dest) / path).parent.mkdir(parents=True, exist_ok=True)
            (Path(dest) / path).write_bytes(data)
        return Path(dest)

    def writes(self) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] != "GET" and r[0] != "HEAD" and any(w in r[1] for w in WRITES)]


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            self._dispatch("GET")

        def do_HEAD(self):
            self._dispatch("HEAD")

        def do_POST(self):
            self._dispatch("POST")

        def _dispatch(self, method: str):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            auth = self.headers.get("Authorization")
            with hub.lock:
                hub.requests.append((method, self.path, auth))
                try:
                    status, payload, headers = self._route(method, urlsplit(self.path), body, auth)
                except HubError as exc:
                    status, headers = exc.status, {"X-Error-Message": str(exc)}
                    if exc.code:
                        headers["X-Error-Code"] = exc.code
                    payload = {"error": str(exc), **exc.extra}
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            if not isinstance(payload, bytes):
                self.send_header("Content-Type", "application/json")
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)

        def _route(self, method, url, body, auth):
            path, query = url.path, parse_qs(url.query)
            is_write = method == "POST" and path != "/api/validate-yaml"
            if is_write and hub.token is not None and auth != f"Bearer {hub.token}":
                raise HubError(401, "Invalid credentials in Authorization header")
            if method == "GET" and path == "/api/whoami-v2":
                return 200, {"type": "user", "name": "tester", "orgs": []}, {}
            if method == "POST" and path == "/api/validate-yaml":
                return self._validate_yaml(json.loads(body))
            if method == "POST" and path == "/api/repos/create":
                return self._create(json.loads(body))
            if match := API.match(path):
                repo = self._repo(match["type"], unquote(match["repo"]))
                rev = unquote(match["rev"]) if match["rev"] else None
                op = match["op"]
                if method == "GET" and op == "refs":
                    return 200, self._refs(repo), {}
                if method == "GET" and op == "revision":
                    return 200, self._info(repo, self._commit(repo, rev)), {}
                if method == "GET" and op == "tree":
                    return 200, self._tree(self._commit(repo, rev), unquote(match["rest"] or "").strip("/"),
                                           query.get("recursive", ["False"])[0].lower() in ("1", "true")), {}
                if method == "POST" and op == "preupload":
                    return 200, self._preupload(repo, rev, json.loads(body)), {}
                if method == "POST" and op == "commit":
                    return 200, self._commit_ndjson(repo, rev, body), {}
                if method == "POST" and op == "tag":
                    return 200, self._tag(repo, rev, json.loads(body)), {}
            if (match := RESOLVE.match(path)) and method in ("GET", "HEAD"):
                repo = self._repo(f"{match['type'] or 'models'}", unquote(match["repo"]))
                commit = self._commit(repo, unquote(match["rev"]))
                name = unquote(match["path"])
                headers = {"X-Repo-Commit": commit.oid}
                if name not in commit.tree:
                    raise HubError(404, "Entry not found", "EntryNotFound")
                data = commit.tree[name]
                return 200, data, {**headers, "ETag": f'"{git_blob_oid(data)}"',
                                   "Content-Type": "application/octet-stream"}
            raise HubError(404, f"fake hub: no route for {method} {path}")

        # -- handlers -------------------------------------------------------------------------------------------
        def _repo(self, type_plural: str, repo_id: str) -> Repo:
            repo = hub.repos.get(repo_id)
            if repo is None or repo.repo_type != TYPES[type_plural]:
                raise HubError(404, "Repository not found", "RepoNotFound")
            return repo

        def _commit(self, repo: Repo, rev: str | None) -> Commit:
            commit = repo.resolve(rev or "main")
            if commit is None:
                raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return commit

        def _url(self, repo: Repo) -> str:
            prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
            return f"{hub.url}/{prefix}{repo.repo_id}"

        def _validate_yaml(self, payload):
            text = payload.get("content", "")
            if text.startswith("---"):
                try:
                    yaml.safe_load(text.split("---", 2)[1])
                except (yaml.YAMLError, IndexError) as exc:
                    return 400, {"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []}, {}
            return 200, {"errors": [], "warnings": []}, {}

        def _create(self, payload):
            repo_type = payload.get("type") or "model"
            name, org = payload["name"], payload.get("organization")
            if not org:
                raise HubError(400, "fake hub: give the repo as ORG/NAME")
            repo_id = f"{org}/{name}"
            hub.created.append(payload)
            if repo_id in hub.repos:
                existing = hub.repos[repo_id]
                raise HubError(409, f"You already created this {repo_type} repo", url=self._url(existing))
            repo = Repo(repo_id, repo_type, payload.get("visibility") == "private" or bool(payload.get("private")))
            first = repo.commit(None, "initial commit", "", {}, [])
            repo.branches["main"] = first.oid
            hub.repos[repo_id] = repo
            return 200, {"url": self._url(repo), "name": repo_id, "id": repo_id}, {}

        def _refs(self, repo: Repo):
            def ref(kind, name, oid):
                return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}
            return {"branches": [ref("heads", n, o) for n, o in repo.branches.items()], "converts": [],
                    "tags": [ref("tags", n, o) for n, o in repo.tags.items()]}

        def _info(self, repo: Repo, commit: Commit):
            return {"id": repo.repo_id, "_id": repo.repo_id, "author": repo.repo_id.split("/")[0],
                    "sha": commit.oid, "private": bool(repo.private), "disabled": False, "gated": False,
                    "tags": [], "siblings": [{"rfilename": p} for p in sorted(commit.tree)]}

        def _tree(self, commit: Commit, under: str, recursive: bool):
            prefix = under + "/" if under else ""
            entries, dirs = [], set()
            for path in sorted(commit.tree):
                if not path.startswith(prefix):
                    continue
                parts = path[len(prefix):].split("/")
                for depth in range(1, len(parts)):
                    if recursive or depth == 1:
                        dirs.add(prefix + "/".join(parts[:depth]))
                if recursive or len(parts) == 1:
                    data = commit.tree[path]
                    entries.append({"type": "file", "path": path, "size": len(data), "oid": git_blob_oid(data)})
            if prefix and not entries and not dirs:
                raise HubError(404, f"{under} does not exist", "EntryNotFound")
            folders = [{"type": "directory", "path": d, "size": 0,
                        "oid": hashlib.sha1(d.encode()).hexdigest()} for d in sorted(dirs)]
            return folders + entries

        def _preupload(self, repo: Repo, rev: str, payload):
            head = self._commit(repo, rev)
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                      "oid": git_blob_oid(head.tree[f["path"]]) if f["path"] in head.tree else None}
                     for f in payload["files"]]
            return {"files": files, "commitOid": head.oid}

        def _commit_ndjson(self, repo: Repo, rev: str, body: bytes):
            if rev not in repo.branches:
                raise HubError(404, f"fake hub: commits go to a branch, not {rev!r}", "RevisionNotFound")
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            if not lines or lines[0].get("key") != "header":
                raise HubError(400, "the first NDJSON line must be the header")
            header = lines[0]["value"]
            parent = repo.branches[rev]
            if header.get("parentCommit") and header["parentCommit"] != parent:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            added, deleted = {}, []
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, f"fake hub: unsupported encoding {value.get('encoding')!r}")
                    added[value["path"]] = base64.b64decode(value["content"])
                elif key in ("deletedFile", "deletedFolder"):
                    deleted.append(value["path"] + ("/" if key == "deletedFolder" else ""))
                else:
                    raise HubError(400, f"fake hub: unsupported commit operation {key!r} (LFS/Xet are not faked)")
            commit = repo.commit(parent, header["summary"], header.get("description", ""), added, deleted)
            repo.branches[rev] = commit.oid
            return {"success": True, "commitOid": commit.oid, "commitUrl": f"{self._url(repo)}/commit/{commit.oid}",
                    "hookOutput": "", "pullRequestUrl": None}

        def _tag(self, repo: Repo, rev: str, payload):
            commit = self._commit(repo, rev)
            tag = payload["tag"]
            if tag in repo.tags:
                raise HubError(409, f"Tag {tag} already exists")
            repo.tags[tag] = commit.oid
            repo.tag_messages[tag] = payload.get("message")
            return {}

    return Handler
