"""A small Hugging Face Hub-compatible HTTP server on 127.0.0.1, for tests without internet.

It answers the endpoints the real ``huggingface_hub`` client calls for ``create_repo``,
``upload_folder``/``create_commit`` (preupload, validate-yaml, commit with inline base64
files) and ``hf_hub_download`` (HEAD/GET ``/{repo}/resolve/{revision}/{path}`` with the
``X-Repo-Commit``, ``ETag`` and ``Content-Length`` headers, and ``Range``), with the
``X-Error-Code`` headers the client turns into its exceptions; ``create_branch`` and commits
with ``create_pr`` (to a branch ``refs/pr/N``) too. Faults can be switched on:
``corrupt`` (serve flipped bytes) and ``truncate`` (close the connection half-way).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class HubState:
    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}  # repo_id -> {"branches": {name: sha}, "commits": {sha: files}}
        self.lock = threading.Lock()
        self.corrupt: set[str] = set()  # file names served with flipped bytes
        self.truncate: set[str] = set()  # file names whose transfer breaks off half-way
        self.requests: list[tuple[str, str]] = []
        self.down = False  # after stop(): kept-alive connections get no answer either

    def create(self, repo_id: str) -> bool:
        with self.lock:
            if repo_id in self.repos:
                return False
            sha = hashlib.sha1(f"init {repo_id}".encode()).hexdigest()
            self.repos[repo_id] = {"branches": {"main": sha}, "commits": {sha: {}}}
            return True

    def commit(self, repo_id: str, branch: str, files: dict[str, bytes], message: str,
               deleted: tuple[str, ...] = ()) -> str:
        with self.lock:
            repo = self.repos[repo_id]
            parent = repo["branches"][branch]
            tree = {**{k: v for k, v in repo["commits"][parent].items() if k not in deleted}, **files}
            h = hashlib.sha1(parent.encode() + message.encode() + " ".join(sorted(deleted)).encode())
            for name in sorted(files):
                h.update(name.encode() + files[name])
            sha = h.hexdigest()
            repo["commits"][sha] = tree
            repo["branches"][branch] = sha
            return sha

    def branch(self, repo_id: str, name: str, start: str = "main") -> bool:
        with self.lock:
            repo = self.repos[repo_id]
            if name in repo["branches"]:
                return False
            repo["branches"][name] = repo["branches"][start]
            return True

    def resolve(self, repo_id: str, revision: str) -> str | None:
        repo = self.repos[repo_id]
        if revision in repo["branches"]:
            return repo["branches"][revision]
        return revision if revision in repo["commits"] else None


class _Handler(BaseHTTPRequestHandler):
    state: HubState
    protocol_version = "HTTP/1.0"  # one request per connection: a stopped server is really unreachable

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, code: int, obj, headers: dict | None = None) -> None:
        self._send(code, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, code: int, error_code: str, message: str, head: bool = False) -> None:
        self._send(code, json.dumps({"error": message}).encode(),
                   {"Content-Type": "application/json", "X-Error-Code": error_code, "X-Error-Message": message}, head)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    # ------------------------------------------------------------------ downloads
    def _resolve(self, head: bool) -> None:
        path = unquote(urlparse(self.path).path)
        m = re.fullmatch(r"/(?:models/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if not m:
            return self._error(404, "EntryNotFound", f"bad path {path}", head)
        repo_id, revision, filename = m.groups()
        st = self.state
        if repo_id not in st.repos:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found", head)
        sha = st.resolve(repo_id, revision)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        files = st.repos[repo_id]["commits"][sha]
        if filename not in files:
            return self._error(404, "EntryNotFound", f"{filename} does not exist at {sha}", head)
        data = files[filename]
        etag = hashlib.sha256(data).hexdigest()
        headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if head:
            return self._send(200, data, headers, head=True)
        if filename in st.corrupt:
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        start = 0
        rng = self.headers.get("Range")
        if rng and (mr := re.fullmatch(r"bytes=(\d+)-", rng.strip())):
            start = int(mr.group(1))
        body = data[start:]
        self.send_response(206 if start else 200)
        for k, v in headers.items():
            self.send_header(k, v)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if filename in st.truncate:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        if self.state.down:
            self.close_connection = True
            return
        self.state.requests.append(("HEAD", self.path))
        self._resolve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        if self.state.down:
            self.close_connection = True
            return
        self.state.requests.append(("GET", self.path))
        path = unquote(urlparse(self.path).path)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if m:
            repo_id, revision = m.group(1), m.group(2) or "main"
            if repo_id not in self.state.repos:
                return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            sha = self.state.resolve(repo_id, revision)
            if sha is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            files = self.state.repos[repo_id]["commits"][sha]
            return self._json(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
                                    "siblings": [{"rfilename": f} for f in sorted(files)]})
        self._resolve(head=False)

    # ------------------------------------------------------------------ uploads
    def do_POST(self) -> None:  # noqa: N802
        if self.state.down:
            self.close_connection = True
            return
        self.state.requests.append(("POST", self.path))
        path = unquote(urlparse(self.path).path)
        body = self._body()
        st = self.state
        if path == "/api/repos/create":
            req = json.loads(body)
            repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            url = f"http://{self.headers['Host']}/{repo_id}"
            if not st.create(repo_id):
                return self._json(409, {"error": "You already created this model repo", "url": url})
            return self._json(200, {"url": url, "name": repo_id})
        if path == "/api/validate-yaml":
            return self._json(200, {"errors": [], "warnings": []})
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/branch/(.+)", path)
        if m:
            repo_id, branch = m.groups()
            if repo_id not in st.repos:
                return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            if not st.branch(repo_id, branch):
                return self._json(409, {"error": f"Reference already exists: refs/heads/{branch}"})
            return self._json(200, {})
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
        if not m:
            return self._error(404, "EntryNotFound", f"no endpoint {path}")
        repo_id, kind, revision = m.groups()
        if repo_id not in st.repos:
            return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        if revision not in st.repos[repo_id]["branches"]:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if kind == "preupload":
            files = json.loads(body)["files"]
            return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                               "oid": None} for f in files]})
        header, files, deleted = {}, {}, []
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                header = item["value"]
            elif item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] == "deletedFile":
                deleted.append(item["value"]["path"])
            else:
                return self._error(400, "BadRequest", f"unsupported commit operation {item['key']}")
        host = self.headers["Host"]
        pr_url = None
        if "create_pr=1" in urlparse(self.path).query:  # a pull request: a new branch refs/pr/N from the revision
            number = 1 + sum(b.startswith("refs/pr/") for b in st.repos[repo_id]["branches"])
            st.branch(repo_id, f"refs/pr/{number}", start=revision)
            revision, pr_url = f"refs/pr/{number}", f"http://{host}/{repo_id}/discussions/{number}"
        sha = st.commit(repo_id, revision, files, header.get("summary", ""), tuple(deleted))
        return self._json(200, {"commitUrl": f"http://{host}/{repo_id}/commit/{sha}", "commitOid": sha,
                                "pullRequestUrl": pr_url, "success": True})


class HubServer:
    """``with HubServer() as hub: os.environ["HF_ENDPOINT"] = hub.url``"""

    def __init__(self) -> None:
        self.state = HubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.state.down = True
        self.httpd.shutdown()
        self.httpd.server_close()

    def __exit__(self, *exc) -> None:
        self.stop()
