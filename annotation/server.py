"""The reviewers' web tool: a FastAPI app over an AnnotationStore, serving plain HTML/JS pages.

    rlhf annotate serve --tasks candidates.jsonl --db annotations.db --overlap 2

Choices:
- Tokens travel in the `Authorization: Bearer` header, read by the page from the link's fragment
  (`/review#t=TOKEN`): a fragment never reaches the server's logs or other sites' Referer headers, and a
  header cannot be forged by another site's form, so there is no cookie and no CSRF to defend against.
  Every API request is checked; the admin token opens only the admin API, a reviewer token only the
  reviewer API, and every reviewer query is filtered by the token's reviewer.
- The pages are static files with no data in them; everything untrusted (prompts, responses, names,
  skip reasons) is inserted with `textContent` by the page. Guidelines are the one piece of HTML, made
  here from markdown with raw HTML off (annotation/rendering.py). A Content-Security-Policy that allows
  only this origin's scripts is a second wall should a bug ever insert untrusted HTML.
- Request bodies are capped (64 KiB by default) by a small ASGI middleware that counts the bytes as they
  arrive, whether or not a Content-Length was sent; request models forbid unknown fields and bound every
  length. Every error is a JSON `{"error": message}` with a 4xx status.
- Handlers are plain `def`s: FastAPI runs them in its thread pool and the store serialises writes, so
  the event loop never blocks on SQLite. The feedback endpoint is the exception: it is `async` so that
  it checks the application key and the rate limit *before* reading the body (a flood of junk from a
  wrong key costs nothing), then hands the write to the thread pool.
- Application keys (annotation/feedback.py) open `POST /api/feedback` only; reviewer and admin tokens
  are refused there, and keys are refused everywhere else (they are not in the reviewers' table).
- A too-fast submission is answered 409 with `"confirm": "too_fast"`: nothing is stored until the page
  sends it again with `confirm_too_fast: true`, and then it is stored marked as fast.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from annotation.errors import AnnotationError, InvalidInput
from annotation.feedback import FeedbackBody, add_feedback, app_for_key, check_feedback
from annotation.judgements import RATING_MAX, RATING_MIN
from annotation.ranking import card_labels
from annotation.ratelimit import RateLimiter
from annotation.rendering import render_markdown
from annotation.store import MAX_RATIONALE_CHARS, MAX_SKIP_REASON_CHARS, AnnotationStore, NeedsConfirmation, Reviewer

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


# -------------------------------------------------------------------------------------------------
# request bodies: unknown fields are refused, every length is bounded
# -------------------------------------------------------------------------------------------------

Label = str  # one card label, "A".."Z"


class RankingBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # no "yes" -> True coercions
    ranking: list[list[Label]] = Field(min_length=1, max_length=26)
    all_bad: bool = False
    rationale: Optional[str] = Field(default=None, max_length=MAX_RATIONALE_CHARS)
    ratings: Optional[dict[Label, int]] = Field(default=None, max_length=26)  # card label -> 1..7
    flags: Optional[dict[Label, list[str]]] = Field(default=None, max_length=26)  # card label -> flag names
    confirm_too_fast: bool = False  # the reviewer confirmed a submission under the minimum time


class AdjudicationBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    decision: Literal["ranking", "discard"]
    ranking: Optional[list[list[str]]] = Field(default=None, min_length=1, max_length=26)  # response ids, best first
    adjudicator: Optional[str] = Field(default=None, max_length=64)
    note: Optional[str] = Field(default=None, max_length=2000)


class QualityOverrideBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    override: Optional[Literal["restored", "blocked"]]  # null: back to the automatic rules


class SkipBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # no "yes" -> True coercions
    reason: str = Field(min_length=1, max_length=MAX_SKIP_REASON_CHARS)


# -------------------------------------------------------------------------------------------------
# ASGI guard: body size cap and security headers on every response
# -------------------------------------------------------------------------------------------------


class GuardMiddleware:
    def __init__(self, app: Any, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = JSONResponse({"error": f"request body larger than {self.max_body_bytes} bytes"}, status_code=413)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await JSONResponse({"error": "bad Content-Length header"}, status_code=400)(scope, receive, send)
                return
            if int(declared) > self.max_body_bytes:
                await too_large(scope, receive, send)
                return
        received = 0

        async def capped_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # FastAPI re-raises HTTPExceptions met while reading the body; ours becomes the 413
                    raise HTTPException(status_code=413, detail=f"request body larger than {self.max_body_bytes} bytes")
            return message

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in SECURITY_HEADERS if h[0] not in present
                ]
            await send(message)

        await self.app(scope, capped_receive, send_with_headers)


# -------------------------------------------------------------------------------------------------
# the app
# -------------------------------------------------------------------------------------------------


_UNION_MEMBER_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _field_path(loc: tuple) -> list[str]:
    """A pydantic error location as the client's field path: without "body" and without the names pydantic
    gives union members (`choice.str`, `prompt.list[Message]`), which are not fields the client sent."""
    return [
        str(part)
        for part in loc
        if part != "body" and not (isinstance(part, str) and (part in _UNION_MEMBER_TAGS or "[" in part))
    ]


def _validation_message(exc: RequestValidationError | ValidationError) -> str:
    problems = []
    seen_locations: set[tuple] = set()
    for error in exc.errors():
        location = _field_path(tuple(error.get("loc", ())))
        if tuple(location) in seen_locations:
            continue  # one message per field (a union reports one error per member)
        seen_locations.add(tuple(location))
        if len(problems) == 3:
            break
        if error.get("type") == "json_invalid":
            problems.append("the request body is not valid JSON")
        elif error.get("type") == "missing" and not location:
            problems.append("a JSON request body is required")
        else:
            where = f"field '{'.'.join(location)}'" if location else "the request body"
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid request"


def _bearer(authorization: Optional[str]) -> str:
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(
            status_code=401, detail="missing token: open the private link you were given (it ends in #t=...)"
        )
    return authorization[len("Bearer ") :].strip()


def create_app(store: AnnotationStore, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The web app for one store. Pages: /review (reviewers), /admin; JSON API under /api."""
    app = FastAPI(title="rlhf annotate", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store

    @app.exception_handler(AnnotationError)
    def _annotation_error(_request: Any, exc: AnnotationError) -> JSONResponse:
        if isinstance(exc, NeedsConfirmation):
            return JSONResponse({"error": str(exc), "confirm": exc.reason, **exc.details}, status_code=exc.http_status)
        return JSONResponse({"error": str(exc)}, status_code=exc.http_status)

    @app.exception_handler(StarletteHTTPException)
    def _http_error(_request: Any, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(RequestValidationError)
    def _validation_error(_request: Any, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc)}, status_code=422)

    def current_reviewer(authorization: Optional[str] = Header(default=None)) -> Reviewer:
        token = _bearer(authorization)
        reviewer = store.reviewer_for_token(token)
        if reviewer is None:
            if store.is_admin_token(token):
                raise HTTPException(
                    status_code=403, detail="this is the admin token; open the admin page, or use a reviewer's link"
                )
            if app_for_key(store, token) is not None:
                raise HTTPException(
                    status_code=403, detail="this is an application key; it opens only POST /api/feedback"
                )
            raise HTTPException(status_code=401, detail="unknown token: ask for a new link")
        return reviewer

    def require_admin(authorization: Optional[str] = Header(default=None)) -> None:
        token = _bearer(authorization)
        if not store.is_admin_token(token):
            raise HTTPException(status_code=403, detail="the admin view needs the admin token")

    limiter = RateLimiter()
    app.state.rate_limiter = limiter

    # ---- pages ----

    @app.get("/", include_in_schema=False)
    @app.get("/review", include_in_schema=False)
    def review_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "review.html", media_type="text/html")

    @app.get("/admin", include_in_schema=False)
    def admin_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "admin.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)  # no icon; answering keeps browsers' consoles free of 404s

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # ---- reviewer API ----

    def quality_payload(reviewer: Reviewer) -> dict[str, Any]:
        """What the reviewer is told about their answers on checked (gold) items; never which items those are."""
        quality = store.quality(reviewer.id)
        accuracy = None if quality.gold_accuracy is None else round(quality.gold_accuracy, 3)
        message = None
        if quality.status == "blocked":
            message = (
                "Your account is paused: too many answers on checked items disagreed with the expected answer. "
                "Please contact the organiser."
            )
        elif quality.status == "warned":
            message = (
                f"Careful: only {accuracy:.0%} of your answers on checked items matched the expected answer. "
                "Please reread the guidelines and take your time."
            )
        return {"status": quality.status, "gold_accuracy": accuracy, "message": message}

    def offer_payload(reviewer: Reviewer) -> dict[str, Any]:
        offer = store.next_task(reviewer.id)
        guidelines = store.default_guidelines
        task_payload = None
        if offer is not None:
            texts = {response["id"]: response["text"] for response in offer.task.responses}
            task_payload = {
                "id": offer.task.id,
                "prompt": offer.task.prompt,
                "cards": [
                    {"label": label, "text": texts[response_id]}
                    for label, response_id in zip(card_labels(len(offer.shown_order)), offer.shown_order, strict=True)
                ],
                "previous": offer.previous,
            }
            guidelines = offer.task.guidelines or guidelines
        judgements = store.judgements
        return {
            "reviewer": reviewer.name,
            "task": task_payload,
            "progress": store.progress(reviewer.id),
            "guidelines_html": render_markdown(guidelines),
            "quality": quality_payload(reviewer),
            "judgements": {
                "ratings": judgements.ratings,
                "rating_min": RATING_MIN,
                "rating_max": RATING_MAX,
                "flags": judgements.flags,
                "rationale": judgements.rationale,
            },
            "min_seconds": store.min_seconds,
        }

    @app.get("/api/next")
    def next_task(reviewer: Reviewer = Depends(current_reviewer)) -> dict[str, Any]:
        return offer_payload(reviewer)

    @app.post("/api/tasks/{task_id}/ranking")
    def submit_ranking(
        task_id: str, body: RankingBody, reviewer: Reviewer = Depends(current_reviewer)
    ) -> dict[str, Any]:
        annotation_id = store.submit_ranking(
            reviewer.id,
            task_id,
            body.ranking,
            all_bad=body.all_bad,
            rationale=body.rationale,
            ratings=body.ratings,
            flags=body.flags,
            confirm_too_fast=body.confirm_too_fast,
        )
        return {"ok": True, "annotation_id": annotation_id, **offer_payload(reviewer)}

    @app.post("/api/tasks/{task_id}/skip")
    def skip_task(task_id: str, body: SkipBody, reviewer: Reviewer = Depends(current_reviewer)) -> dict[str, Any]:
        annotation_id = store.skip(reviewer.id, task_id, body.reason)
        return {"ok": True, "annotation_id": annotation_id, **offer_payload(reviewer)}

    @app.post("/api/undo")
    def undo(reviewer: Reviewer = Depends(current_reviewer)) -> dict[str, Any]:
        task_id = store.undo_last(reviewer.id)
        return {"ok": True, "undone_task": task_id, **offer_payload(reviewer)}

    # ---- admin API ----

    @app.get("/api/admin/stats", dependencies=[Depends(require_admin)])
    def admin_stats(min_agreement: float = Query(default=0.5, ge=0.0, lt=1.0)) -> dict[str, Any]:
        from annotation.stats import collect_stats

        return collect_stats(store, min_agreement=min_agreement)

    @app.get("/api/admin/export", dependencies=[Depends(require_admin)])
    def admin_export(
        format: Literal["rankings", "pairs", "raw"] = "rankings",
        min_agreement: float = Query(default=0.5, ge=0.0, lt=1.0),
    ) -> PlainTextResponse:
        import json

        from annotation.export import export_rows

        rows = export_rows(store, format, min_agreement=min_agreement)
        body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        return PlainTextResponse(
            body,
            media_type="application/x-ndjson",
            headers={"content-disposition": f'attachment; filename="{format}.jsonl"'},
        )

    @app.get("/api/admin/tasks/{task_id}", dependencies=[Depends(require_admin)])
    def admin_task(task_id: str) -> dict[str, Any]:
        from annotation.adjudication import task_detail

        return task_detail(store, task_id)

    @app.post("/api/admin/tasks/{task_id}/adjudication", dependencies=[Depends(require_admin)])
    def adjudicate(task_id: str, body: AdjudicationBody) -> dict[str, Any]:
        from annotation.adjudication import decide

        return {
            "ok": True,
            **decide(store, task_id, body.decision, body.ranking, body.adjudicator or "admin", body.note),
        }

    @app.delete("/api/admin/tasks/{task_id}/adjudication", dependencies=[Depends(require_admin)])
    def withdraw_adjudication(task_id: str) -> dict[str, Any]:
        from annotation.adjudication import withdraw

        withdraw(store, task_id)
        return {"ok": True}

    @app.post("/api/admin/reviewers/{name}/quality", dependencies=[Depends(require_admin)])
    def override_quality(name: str, body: QualityOverrideBody) -> dict[str, Any]:
        return {"ok": True, "name": name, **store.set_quality_override(name, body.override).as_dict()}

    # ---- end users' feedback, sent by applications ----

    @app.post("/api/feedback")
    async def feedback(request: Request, authorization: Optional[str] = Header(default=None)) -> JSONResponse:
        import json

        key = _bearer(authorization)
        application = await run_in_threadpool(app_for_key, store, key)
        if application is None:
            if store.is_admin_token(key) or await run_in_threadpool(store.reviewer_for_token, key) is not None:
                raise HTTPException(
                    status_code=403,
                    detail="reviewer and admin tokens cannot send feedback; "
                    "use an application key (rlhf annotate add-app)",
                )
            raise HTTPException(status_code=401, detail="unknown application key")
        allowed, retry_after = limiter.allow(application.id, application.rate_per_minute)
        if not allowed:
            return JSONResponse(
                {
                    "error": f"rate limit of {application.rate_per_minute:g} requests a minute exceeded "
                    f"for application "
                    f"{application.name!r}; retry in {retry_after:.1f} s"
                },
                status_code=429,
                headers={"retry-after": str(max(1, round(retry_after + 0.5)))},
            )
        raw = await request.body()
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise InvalidInput("the request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise InvalidInput("the request body must be a JSON object")
        try:
            body = FeedbackBody.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(_validation_message(exc)) from None
        fields = check_feedback(body)
        feedback_id, duplicate = await run_in_threadpool(add_feedback, store, application, fields)
        return JSONResponse(
            {"ok": True, "feedback_id": feedback_id, "duplicate": duplicate}, status_code=200 if duplicate else 201
        )

    app.add_middleware(GuardMiddleware, max_body_bytes=max_body_bytes)
    return app


# -------------------------------------------------------------------------------------------------
# running it
# -------------------------------------------------------------------------------------------------


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """Bind before starting uvicorn so port 0 gives a real port to print (and to tests) with no race."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # listen now, so clients that connect before uvicorn's loop starts wait in the backlog instead of
    # being refused (uvicorn listens on it again with its own backlog)
    sock.listen(2048)
    return sock


def make_server(app: Any, log_level: str = "warning"):
    import uvicorn

    # access_log off: the links carry tokens only in the fragment, but request logs are noise for reviewers' tool
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=5))


@contextlib.contextmanager
def serve_in_background(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run the app with uvicorn in a daemon thread; yields its base URL (used by tests and benchmarks)."""
    sock = bind_socket(host, port)
    server = make_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="annotation-server")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the annotation server did not start")
        time.sleep(0.01)
    bound_host, bound_port = sock.getsockname()[:2]
    try:
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
