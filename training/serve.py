"""`vigie serve`: MLflow's own scoring app (`mlflow.pyfunc.scoring_server`) on a registered model, inside a thin
ASGI guard of the project's own, run by uvicorn with N worker processes.

The scoring app does the work (parsing `dataframe_split` / `dataframe_records` / CSV / Parquet, the signature's
schema checks, the model's own input checks). The guard only makes its answers to malformed requests clean:
- a POST to /invocations without a supported `Content-Type` gets 415, a body over the limit gets 413, both with a
  JSON message, before the scoring app sees them (it answers 500 to a missing header);
- every error answer is JSON `{"error_code", "message"}`: MLflow's `stack_trace` field is dropped, and so is the
  copy of the whole input MLflow puts before a model's own message; the message is cut to `MAX_MESSAGE_CHARS`;
- `/version` answers JSON (the model URI and version, the vigie and MLflow versions) instead of a bare string;
- `/openapi.json` describes the served contract (the scoring app's own has no request body), so that a fuzzer can
  be driven by it;
- a worker scores one request at a time, and an answer sent while others wait in that worker closes its
  connection, so that the client's next request reaches an idle worker (`Guard._score`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
from importlib.metadata import version as package_version

import uvicorn

from training import tracking
from training.models.contract import INPUT_COLUMNS, MAX_ROWS, MAX_TEXT_CHARS

SUPPORTED_TYPES = ("application/json", "text/csv", "application/vnd.apache.parquet")
DEFAULT_MAX_BODY_MB = 16.0  # ~5,000 long articles; MAX_ROWS and MAX_TEXT_CHARS bound a request's rows anyway
MAX_MESSAGE_CHARS = 1000
# what the parent process hands each uvicorn worker (workers are separate processes that import `create_app`)
_ENV = "VIGIE_SERVE"
# the scoring app prefixes a model's refusal with the whole parsed input: the caller sent it, and it can be megabytes
_ECHOED_INPUT = re.compile(r"^Failed to predict data '.*?'\. \nError: ", re.DOTALL)


def _json_response(status: int, body: dict) -> tuple[int, bytes]:
    return status, json.dumps(body, ensure_ascii=False).encode()


def _error(status: int, code: str, message: str) -> tuple[int, bytes]:
    return _json_response(status, {"error_code": code, "message": message})


def clean_error_body(body: bytes) -> bytes:
    """An error answer of the scoring app -> `{"error_code", "message"}` with no stack trace, the message cut."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {"message": body.decode("utf-8", "replace")}
    if not isinstance(doc, dict):
        doc = {"message": str(doc)}
    message = _ECHOED_INPUT.sub("", str(doc.get("message", "")))
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + f"... ({len(message)} characters)"
    return json.dumps({"error_code": doc.get("error_code", "BAD_REQUEST"), "message": message},
                      ensure_ascii=False).encode()


def openapi_document(info: dict) -> dict:
    """The served contract as OpenAPI 3: the three endpoints and the JSON request body of /invocations."""
    columns = {name: {"type": "string"} if required else {"type": ["string", "null"]}
               for name, _, required in INPUT_COLUMNS}
    required = [name for name, _, req in INPUT_COLUMNS if req]
    record = {"type": "object", "properties": columns, "required": required}
    split = {"type": "object", "required": ["columns", "data"], "properties": {
        "columns": {"type": "array", "items": {"type": "string", "enum": list(columns)}},
        "data": {"type": "array", "maxItems": MAX_ROWS, "items": {"type": "array", "items": {"type": ["string", "null"]}}}}}
    request = {"oneOf": [
        {"type": "object", "required": ["dataframe_records"],
         "properties": {"dataframe_records": {"type": "array", "maxItems": MAX_ROWS, "items": record}}},
        {"type": "object", "required": ["dataframe_split"], "properties": {"dataframe_split": split}},
    ]}
    error = {"description": "a malformed request, with a message",
             "content": {"application/json": {"schema": {"type": "object", "properties": {
                 "error_code": {"type": "string"}, "message": {"type": "string"}}}}}}
    ok = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "vigie", "version": info["vigie"],
                 "description": f"Topic and stance of French news articles; `text` up to {MAX_TEXT_CHARS} "
                                f"characters, up to {MAX_ROWS} rows a request."},
        "paths": {
            "/ping": {"get": {"responses": {"200": {"description": "the model is loaded"}}}},
            "/health": {"get": {"responses": {"200": {"description": "the model is loaded"}}}},
            "/version": {"get": {"responses": {"200": ok}}},
            "/invocations": {"post": {
                "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
                "responses": {"200": ok, "400": error, "413": error, "415": error}}},
        },
    }


class Guard:
    """ASGI middleware around the scoring app: refuses what it cannot take with a 4xx and cleans error bodies."""

    def __init__(self, app, info: dict, max_body_bytes: int):
        self.app = app
        self.info = info
        self.max_body_bytes = max_body_bytes
        self.openapi = json.dumps(openapi_document(info)).encode()
        self._turn = asyncio.Lock()  # bound to the worker's event loop on first use
        self._waiting = 0  # requests of this worker waiting for their turn

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == "/version":
            return await _send(send, *_json_response(200, self.info))
        if method == "GET" and path == "/openapi.json":
            return await _send(send, 200, self.openapi)
        if path == "/invocations" and method == "POST":
            refused = self._check_headers(dict(scope["headers"]))
            if refused:
                await _drain(receive)
                return await _send(send, *refused)
            body, too_big = await _read_body(receive, self.max_body_bytes)
            if too_big:
                return await _send(send, *self._too_big())
            receive = _replay(body)
            return await self._score(scope, receive, send)
        await self.app(scope, receive, _CleanErrors(send))

    async def _score(self, scope, receive, send) -> None:
        """One scoring call at a time in this worker: the scoring app runs each request in a thread, and two at
        once in one process share its GIL and cost more CPU for the same articles. A request answered while
        others wait here closes its connection (`Connection: close`): the client's next request comes on a new
        connection, which an idle worker, waiting in `accept`, is the first to take; keep-alive connections would
        otherwise stay pinned to the worker that accepted them, however busy (docs/benchmarks.md)."""
        self._waiting += 1
        try:
            await self._turn.acquire()
        finally:  # a request cancelled while it waits (its client went away) waits no more
            self._waiting -= 1
        try:
            await self.app(scope, receive, _CleanErrors(_CloseWhenBehind(send, self)))
        finally:
            self._turn.release()

    def _too_big(self) -> tuple[int, bytes]:
        return _error(413, "REQUEST_TOO_LARGE", f"the request body is over the {self.max_body_bytes} bytes accepted; "
                                                f"split the batch")

    def _check_headers(self, headers: dict[bytes, bytes]) -> tuple[int, bytes] | None:
        raw = headers.get(b"content-type", b"").decode("latin-1").strip()
        mime = raw.split(";")[0].strip().lower()
        if mime not in SUPPORTED_TYPES:
            got = f"'{raw}'" if raw else "no Content-Type header"
            return _error(415, "UNSUPPORTED_MEDIA_TYPE", f"send one of {', '.join(SUPPORTED_TYPES)}; got {got}")
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return _error(400, "BAD_REQUEST", "the Content-Length header is not a number")
            if n > self.max_body_bytes:
                return self._too_big()
        return None


class _CleanErrors:
    """Wraps `send`: a 4xx/5xx answer's body is buffered and rewritten by `clean_error_body`."""

    def __init__(self, send):
        self.send = send
        self.status = 200
        self.start = None
        self.chunks: list[bytes] = []

    async def __call__(self, message):
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self.status < 400:
                return await self.send(message)
            self.start = message
            return None
        if message["type"] == "http.response.body" and self.start is not None:
            self.chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return None
            body = clean_error_body(b"".join(self.chunks))
            headers = [(k, v) for k, v in self.start.get("headers", [])
                       if k.lower() not in (b"content-length", b"content-type")]
            await self.send({**self.start, "headers": headers + [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            return await self.send({"type": "http.response.body", "body": body})
        return await self.send(message)


class _CloseWhenBehind:
    """Wraps `send`: the answer's headers get `Connection: close` when other requests wait in this worker."""

    def __init__(self, send, guard: Guard):
        self.send = send
        self.guard = guard

    async def __call__(self, message):
        if message["type"] == "http.response.start" and self.guard._waiting:
            message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        return await self.send(message)


async def _send(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive, limit: int) -> tuple[bytes, bool]:
    """The whole body, or (what was read, True) once it passes `limit` (a chunked body has no Content-Length)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            await _drain(receive, message)
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks), False


async def _drain(receive, last: dict | None = None) -> None:
    while last is None or last.get("more_body"):
        last = await receive()
        if last["type"] == "http.disconnect":
            return


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def create_app():
    """The ASGI app of one worker: the model and the limits come from the parent process (`serve`)."""
    from training.registry import load_model, scoring_app

    settings = json.loads(os.environ[_ENV])
    return Guard(scoring_app(load_model(settings["model_path"])), settings["info"], int(settings["max_body_mb"] * 2**20))


class _NoDelayConfig(uvicorn.Config):
    """uvicorn's config, with a listening socket whose `proto` reads IPPROTO_TCP. With several workers uvicorn
    binds the socket itself as `socket.socket(family)` (proto 0), and asyncio sets TCP_NODELAY only on the
    connections of a socket whose proto is TCP: every keep-alive answer then waited ~40 ms for the client's
    delayed ACK (Nagle; Kludex/uvicorn#3149; docs/benchmarks.md). The same bound socket, its proto read back
    from the kernel, fixes that."""

    def bind_socket(self) -> socket.socket:
        return socket.socket(fileno=super().bind_socket().detach())


def serve(model_uri: str, host: str = "127.0.0.1", port: int = 5000, workers: int | None = None,
          max_body_mb: float = DEFAULT_MAX_BODY_MB) -> int:
    """Download the model once, then serve it with `workers` uvicorn processes (default: one per core)."""
    from training.registry import download_model, model_version, pinned_uri

    tracking.setup()
    workers = workers or os.cpu_count() or 1
    version = model_version(model_uri)
    path = download_model(pinned_uri(model_uri, version))  # the version reported is the one served
    info = {"model_uri": model_uri, "model_version": version,
            "vigie": package_version("vigie"),
            "mlflow": package_version("mlflow")}
    os.environ[_ENV] = json.dumps({"model_path": path, "info": info, "max_body_mb": max_body_mb})
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"serving {model_uri} (version {info['model_version']}) on http://{host}:{port}/invocations with "
          f"{workers} worker(s) (store {tracking.tracking_uri()})", file=sys.stderr)
    config = _NoDelayConfig("training.serve:create_app", factory=True, host=host, port=port, workers=workers,
                            log_level="warning")
    if workers > 1:  # what uvicorn.run does, with the config above
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return 0
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 3  # uvicorn's STARTUP_FAILURE: the worker could not load the model
