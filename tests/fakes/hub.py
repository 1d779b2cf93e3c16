"""A fake Hugging Face Hub: the part of its HTTP API that ``huggingface_hub`` and
``datasets.DatasetDict.push_to_hub`` speak when they publish, on a real socket.

Point ``HF_ENDPOINT`` at the shared fake server with these routes added
(``FakeServer(extra_routes=[hub.hook])``, then ``HF_ENDPOINT=srv.base``) and the real clients
create repos, ask how to upload, commit, tag, list trees and download files, as they would against
huggingface.co. Text files are "regular" (their bytes travel base64 inside the commit); binary ones
(parquet, safetensors, ...) are "lfs": the client asks the LFS batch endpoint where to put them,
PUTs them there, and commits their sha256. Xet, the Hub's newer store for LFS files, is a separate
protocol this fake does not speak: set ``HF_HUB_DISABLE_XET`` and the client uses LFS. Repos live in memory: ``hub.repos[("dataset", "org/name")].files`` holds
what was published, ``.commits`` the commit messages, ``.tags`` the tags.

``token``: requests that write without ``Authorization: Bearer <token>`` get the Hub's 401.
``authorizations`` keeps every Authorization header received, so a test can check what was sent.
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field

from aiohttp import web

_LFS = (".parquet", ".safetensors", ".bin", ".pt", ".png", ".arrow")


@dataclass
class FakeRepo:
    kind: str  # model | dataset
    repo_id: str
    private: bool = False
    files: dict[str, bytes] = field(default_factory=lambda: {".gitattributes": b"*.parquet filter=lfs\n"})
    commits: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    sha: str = "0" * 40

    def info(self) -> dict:
        return {"id": self.repo_id, "sha": self.sha, "private": self.private, "siblings": [
            {"rfilename": p} for p in sorted(self.files)], "lastModified": "2026-01-01T00:00:00.000Z",
            "tags": [], "downloads": 0, "likes": 0, "cardData": {}, "disabled": False, "gated": False}


@dataclass
class FakeHub:
    token: str | None = None
    repos: dict[tuple[str, str], FakeRepo] = field(default_factory=dict)
    authorizations: list[str] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)  # LFS objects by sha256
    base_url: str = ""

    def hook(self, app: web.Application, _state=None) -> None:
        app.router.add_route("*", "/api/{tail:.*}", self.api)
        app.router.add_post("/{repo:.+}.git/info/lfs/objects/batch", self.lfs_batch)
        app.router.add_put("/_lfs/{oid}", self.lfs_put)
        app.router.add_route("GET", "/{tail:.*}/resolve/{rev}/{path:.*}", self.resolve)
        app.router.add_route("HEAD", "/{tail:.*}/resolve/{rev}/{path:.*}", self.resolve)

    # -- helpers --------------------------------------------------------------------------
    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        self.authorizations.append(header)
        return self.token is None or header == f"Bearer {self.token}"

    @staticmethod
    def _error(status: int, code: str | None, message: str) -> web.Response:
        headers = {"X-Error-Code": code, "X-Error-Message": message} if code else {"X-Error-Message": message}
        return web.json_response({"error": message}, status=status, headers=headers)

    def _repo(self, kind: str, repo_id: str) -> FakeRepo | None:
        return self.repos.get((kind, repo_id))

    # -- /api/... ---------------------------------------------------------------------------
    async def api(self, request: web.Request) -> web.Response:
        parts = request.match_info["tail"].split("/")
        if parts == ["agent-harnesses"]:  # the client's daily user-agent registry fetch; it copes without
            return self._error(404, None, "not served by the fake hub")
        if not self._authorized(request):
            return self._error(401, None, "Invalid credentials in Authorization header")
        if parts[0] == "whoami-v2":
            return web.json_response({"type": "user", "name": "distill-test", "orgs": [], "auth": {}})
        if parts[0] == "validate-yaml":  # a card's metadata: the real Hub checks it against its schema
            return web.json_response({"warnings": []})
        if parts[:2] == ["repos", "create"]:
            return await self.create(request)
        if parts[0] not in ("models", "datasets") or len(parts) < 3:
            return self._error(404, None, f"no fake route for /api/{'/'.join(parts)}")
        kind, repo_id, rest = parts[0][:-1], "/".join(parts[1:3]), parts[3:]
        repo = self._repo(kind, repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", f"Repository Not Found for url: {request.url}")
        if not rest or rest[0] == "revision":
            return web.json_response(repo.info())
        action, body = rest[0], await request.read()
        if action == "preupload":
            files = json.loads(body)["files"]
            return web.json_response({"files": [{"path": f["path"], "shouldIgnore": False,
                                                 "uploadMode": "lfs" if f["path"].endswith(_LFS) else "regular"}
                                                for f in files], "commitOid": repo.sha})
        if action == "commit":
            return self.commit(repo, body)
        if action == "tree":
            return self.tree(repo, "/".join(rest[2:]), request.query.get("recursive") in ("1", "true", "True"))
        if action == "paths-info":
            wanted = (await request.post()).getall("paths", []) if not body.startswith(b"{") else json.loads(body)["paths"]
            return web.json_response([{"type": "file", "path": p, "size": len(repo.files[p]),
                                       "oid": hashlib.sha1(repo.files[p]).hexdigest()}
                                      for p in wanted if p in repo.files])
        if action == "tag":
            tag = json.loads(body)["tag"]
            repo.tags[tag] = repo.sha
            return web.json_response({"name": tag})
        return self._error(404, None, f"no fake route for {action}")

    async def create(self, request: web.Request) -> web.Response:
        spec = await request.json()
        kind = spec.get("type", "model")
        repo_id = f"{spec.get('organization') or 'distill-test'}/{spec['name']}"
        url = f"{self.base_url}/{'datasets/' if kind == 'dataset' else ''}{repo_id}"
        if (kind, repo_id) in self.repos:
            return web.json_response({"error": "You already created this repo", "url": url}, status=409)
        self.repos[(kind, repo_id)] = FakeRepo(kind, repo_id, private=bool(spec.get("private")))
        return web.json_response({"url": url, "name": repo_id})

    def commit(self, repo: FakeRepo, body: bytes) -> web.Response:
        """NDJSON: a header (summary), then ``file`` (base64 content) and ``deletedFile`` lines."""
        for line in body.decode("utf-8").splitlines():
            entry = json.loads(line)
            value = entry["value"]
            if entry["key"] == "header":
                repo.commits.append(value.get("summary", ""))
            elif entry["key"] == "file":
                repo.files[value["path"]] = base64.b64decode(value["content"])
            elif entry["key"] == "lfsFile":
                if value["oid"] not in self.blobs:
                    return self._error(400, None, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                repo.files[value["path"]] = self.blobs[value["oid"]]
            elif entry["key"] in ("deletedFile", "deletedFolder"):
                for path in [p for p in repo.files if p == value["path"] or p.startswith(value["path"].rstrip("/") + "/")]:
                    del repo.files[path]
            else:
                return self._error(400, None, f"fake hub: unsupported commit entry {entry['key']}")
        repo.sha = hashlib.sha1(f"{repo.sha}{len(repo.commits)}{sorted(repo.files)}".encode()).hexdigest()
        return web.json_response({"commitUrl": f"{self.base_url}/{repo.repo_id}/commit/{repo.sha}",
                                  "commitOid": repo.sha})

    def tree(self, repo: FakeRepo, folder: str, recursive: bool) -> web.Response:
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        entries: dict[str, dict] = {}
        for path, data in sorted(repo.files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            if "/" in rest and not recursive:
                sub = prefix + rest.split("/")[0]
                entries[sub] = {"type": "directory", "path": sub, "oid": "d" * 40, "size": 0}
            else:
                entries[path] = {"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
        if prefix and not entries:
            return self._error(404, "EntryNotFound", f"{folder} does not exist on main")
        return web.json_response(list(entries.values()))

    # -- LFS: where to PUT each object, and the PUT -----------------------------------------------
    async def lfs_batch(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(401, None, "Invalid credentials in Authorization header")
        objects = (await request.json())["objects"]
        return web.json_response({"transfer": "basic", "objects": [
            {"oid": o["oid"], "size": o["size"]} if o["oid"] in self.blobs else
            {"oid": o["oid"], "size": o["size"], "actions": {"upload": {"href": f"{self.base_url}/_lfs/{o['oid']}"}}}
            for o in objects]})

    async def lfs_put(self, request: web.Request) -> web.Response:
        data = await request.read()
        if hashlib.sha256(data).hexdigest() != request.match_info["oid"]:
            return self._error(400, None, "LFS object does not match its sha256")
        self.blobs[request.match_info["oid"]] = data
        return web.Response(status=200)

    # -- /{repo}/resolve/{rev}/{path} ---------------------------------------------------------
    async def resolve(self, request: web.Request) -> web.Response:
        tail = request.match_info["tail"]
        kind, repo_id = ("dataset", tail[len("datasets/"):]) if tail.startswith("datasets/") else ("model", tail)
        repo = self._repo(kind, repo_id)
        path = request.match_info["path"]
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository Not Found")
        if path not in repo.files:
            return self._error(404, "EntryNotFound", f"{path} does not exist")
        data = repo.files[path]
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                   "Content-Length": str(len(data))}
        return web.Response(body=b"" if request.method == "HEAD" else data, headers=headers)
