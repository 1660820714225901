"""A small in-memory server on 127.0.0.1 that speaks the part of the Hugging Face Hub API that
``huggingface_hub`` uses to create a repo, push files (regular uploads, no LFS/Xet), list and download them.

Model repos are keyed ``owner/name`` in ``HubState.repos``, dataset repos ``datasets/owner/name``, Spaces
``spaces/owner/name`` (created with ``repo_type="space"``; their SDK is kept in ``Repo.sdk``).

Used by the tests so that push and download go through the real client over real HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


@dataclass
class Repo:
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)
    sdk: str | None = None  # a Space's SDK (create_repo(..., space_sdk=...))

    @property
    def head(self) -> str:
        return self.commits[-1] if self.commits else "0" * 40


class HubState:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.fail_commits = False  # make the next commits fail (to test failed pushes)
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()


def _handler(state: HubState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, status: int, obj, headers: dict | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _error(self, status: int, code: str, message: str, head: bool = False) -> None:
            body = json.dumps({"error": message}).encode()
            self._send(status, body, {"Content-Type": "application/json", "X-Error-Code": code,
                                      "X-Error-Message": message}, head=head)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        # --- downloads: /{repo}/resolve/{rev}/{path} -------------------------------------------
        def _resolve(self, head: bool) -> None:
            path = unquote(urlparse(self.path).path).lstrip("/")
            parts = path.split("/")
            prefix = "datasets/" if parts[0] == "datasets" else ""
            if parts[0] in ("models", "datasets"):
                parts = parts[1:]
            if len(parts) < 5 or parts[2] != "resolve":
                return self._error(404, "RepoNotFound", f"unknown path {path}", head)
            repo_id, rev, file = prefix + "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            with state.lock:
                repo = state.repos.get(repo_id)
                if repo is None:
                    return self._error(401, "RepoNotFound", f"Repository {repo_id} not found", head)
                if rev not in ("main", repo.head):
                    return self._error(404, "RevisionNotFound", f"Revision {rev} not found", head)
                data = repo.files.get(file)
                commit = repo.head
            if data is None:
                return self._error(404, "EntryNotFound", f"{file} does not exist in {repo_id}", head)
            etag = '"' + hashlib.sha1(data).hexdigest() + '"'
            self._send(200, data, {"ETag": etag, "X-Repo-Commit": commit, "Content-Type": "application/octet-stream",
                                   "Accept-Ranges": "bytes"}, head=head)

        def do_HEAD(self) -> None:
            state.requests.append(("HEAD", self.path))
            self._resolve(head=True)

        def do_GET(self) -> None:
            state.requests.append(("GET", self.path))
            path = urlparse(self.path).path
            if path.startswith("/api/whoami"):
                return self._json(200, {"type": "user", "name": "tester", "auth": {"accessToken": {"role": "write"}}})
            if path.startswith(("/api/models/", "/api/datasets/")):
                parts = unquote(path).split("/")  # /api/{type}s/{owner}/{name}[/revision|tree/{rev}[/{path}]]
                repo_id = "/".join(parts[3:5])
                key = ("datasets/" if parts[2] == "datasets" else "") + repo_id
                with state.lock:
                    repo = state.repos.get(key)
                    if repo is None:
                        return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
                    files = dict(repo.files)
                    head_commit = repo.head
                rev = unquote(parts[6]) if len(parts) > 6 else "main"
                if rev not in ("main", head_commit):
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                if len(parts) > 6 and parts[5] == "tree":  # one page: the folder's entries, or all files below it
                    under = "/".join(parts[7:]).strip("/")
                    under = under + "/" if under else ""
                    recursive = "recursive=true" in urlparse(self.path).query.lower()
                    entries, folders = [], set()
                    for f, b in sorted(files.items()):
                        if not f.startswith(under):
                            continue
                        rest = f[len(under):]
                        if recursive or "/" not in rest:
                            oid = hashlib.sha1(b).hexdigest()
                            entries.append({"type": "file", "path": f, "size": len(b), "oid": oid})
                        elif rest.split("/")[0] not in folders:
                            folders.add(rest.split("/")[0])
                            entries.append({"type": "directory", "path": under + rest.split("/")[0], "oid": "0" * 40})
                    return self._json(200, entries)
                return self._json(200, {"id": repo_id, "sha": head_commit,
                                        "siblings": [{"rfilename": f} for f in sorted(files)]})
            self._resolve(head=False)

        # --- uploads ----------------------------------------------------------------------------
        def do_POST(self) -> None:
            state.requests.append(("POST", self.path))
            path = urlparse(self.path).path
            body = self._body()
            if path == "/api/repos/create":
                req = json.loads(body)
                repo_id = f"{req.get('organization') or 'tester'}/{req['name']}"
                kind = req.get("type") or "model"
                key = ("spaces/" if kind == "space" else "datasets/" if kind == "dataset" else "") + repo_id
                with state.lock:
                    exists = key in state.repos
                    state.repos.setdefault(key, Repo(sdk=req.get("sdk") if kind == "space" else None))
                if exists:
                    return self._error(409, "RepoExists", f"You already created this {kind} repo")
                return self._json(200, {"url": f"http://{self.headers['Host']}/{key}", "name": repo_id,
                                        "id": repo_id})
            if path == "/api/validate-yaml":
                return self._json(200, {"errors": [], "warnings": []})
            parts = path.split("/")
            kinds = {"models": "", "datasets": "datasets/", "spaces": "spaces/"}  # /api/{type}s/{owner}/{name}/...
            if len(parts) >= 7 and parts[1] == "api" and parts[2] in kinds and parts[5] == "preupload":
                req = json.loads(body)
                files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                         for f in req.get("files", [])]
                head = state.repos.get(kinds[parts[2]] + "/".join(parts[3:5]), Repo()).head
                return self._json(200, {"files": files, "commitOid": head})
            if len(parts) >= 7 and parts[1] == "api" and parts[2] in kinds and parts[5] == "commit":
                repo_id = kinds[parts[2]] + "/".join(parts[3:5])
                if state.fail_commits:
                    return self._error(500, "InternalError", "commit failed (test)")
                with state.lock:
                    repo = state.repos.get(repo_id)
                    if repo is None:
                        return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
                    for line in body.decode().splitlines():
                        if not line.strip():
                            continue
                        item = json.loads(line)
                        key, value = item["key"], item["value"]
                        if key == "file":
                            repo.files[value["path"]] = base64.b64decode(value["content"])
                        elif key == "deletedFile":
                            repo.files.pop(value["path"], None)
                    commit = hashlib.sha1(f"{repo_id}{len(repo.commits)}{sorted(repo.files)}".encode()).hexdigest()
                    repo.commits.append(commit)
                return self._json(200, {"commitUrl": f"http://{self.headers['Host']}/{repo_id}/commit/{commit}",
                                        "commitOid": commit, "pullRequestUrl": None})
            self._error(404, "NotFound", f"no route for POST {path}")

    return Handler


class HubServer:
    """``with HubServer() as hub: hub.endpoint`` -> ``http://127.0.0.1:<port>``."""

    def __init__(self) -> None:
        self.state = HubState()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
