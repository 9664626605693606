"""The scoring API (FastAPI): what a laboratory information system or an analyser's export script calls.

``python -m leukoview serve`` runs it on uvicorn, bound to 127.0.0.1 by default. It shares the ``score`` path
(:func:`leukoview.jobs.predict.score_files`: input gate, cell locating, colour steps, the network, OOD flags, training
membership), so an image's answer is the row ``score`` writes for it, plus the bundle's id and weights' sha256.

- ``POST /v1/score``: one or more images (multipart field ``files``), optional ``bundle`` (an id from
  ``/v1/models``; default: the server's). A request whose every image is refused gets a 4xx naming why (413: over
  the size or pixel limit; 422: empty, not an image, or not a stained blood image); in a request with some good
  images a refused one is a result with its ``error`` or ``gate`` reason.
- ``GET /v1/models``: the verified bundles: task, classes, threshold, recommended or not, external results.
- ``GET /healthz``; OpenAPI docs at ``/docs``.
- ``LEUKOVIEW_API_TOKEN`` set: ``/v1/*`` needs ``Authorization: Bearer <token>``.

FastAPI is imported only here (an optional extra: the app and the other commands never load it).
"""
from __future__ import annotations

import hmac
import logging
import math
import os
import re
import tempfile
import threading
from pathlib import Path

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse

from leukoview import audits
from leukoview.models.bundle import BundleError, list_bundles, load_bundle
from leukoview.primitives import settings, tasks
from leukoview.primitives.images import MAX_BYTES, MAX_PIXELS

LOG = logging.getLogger("leukoview.app.api")
TOKEN_ENV = "LEUKOVIEW_API_TOKEN"
MAX_FILES = 256  # images per request
TOO_LARGE = re.compile(r"above the .*(limit|megapixels)|too large to decode", re.IGNORECASE)


class _Models:
    """Verified bundles and their predictors, loaded once each (thread-safe)."""

    def __init__(self, models_dir: Path, default: str | None):
        self.models_dir = Path(models_dir)
        self._lock = threading.Lock()
        self._predictors: dict[str, tuple[object, threading.Lock]] = {}
        self.default = default or self._recommended_default()

    def _recommended_default(self) -> str:
        found = {b.id for b in list_bundles(self.models_dir)}
        for rec in (tasks.recommended_for("wbc9"), tasks.recommended_for("all4")):  # the leukocyte model first
            if rec in found:
                return rec
        return sorted(found)[0] if found else ""

    def predictor(self, bundle_id: str):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", bundle_id or ""):
            raise HTTPException(404, f"no bundle {bundle_id!r}; GET /v1/models lists them")
        with self._lock:
            if bundle_id not in self._predictors:
                from leukoview.jobs.predict import Predictor

                folder = self.models_dir / bundle_id
                if not (folder / "card.json").is_file():
                    raise HTTPException(404, f"no bundle {bundle_id!r}; GET /v1/models lists them")
                try:
                    self._predictors[bundle_id] = (Predictor(load_bundle(folder)), threading.Lock())
                except BundleError as e:  # the reason goes to the log; the caller is not told server paths
                    LOG.error("bundle %s is not usable: %s", bundle_id, e)
                    raise HTTPException(409, f"bundle {bundle_id!r} failed verification; it cannot be used "
                                             "(the server log says why)") from None
            return self._predictors[bundle_id]


def _clean(v):
    """JSON-safe scalar: NaN -> None, numpy -> Python."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _safe_name(name: str, k: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name or "").name).strip("._") or "image"
    return f"{k:04d}_{stem}"


def score_bytes(predictor, uploads: list[tuple[str, bytes]]) -> list[dict]:
    """Score uploaded images exactly as ``score`` scores files: each is written to a private temporary folder
    and goes through :func:`leukoview.jobs.predict.score_files`; returns one dict per image, in order, with the
    uploaded name as ``file``."""
    from leukoview.jobs.predict import score_files

    with tempfile.TemporaryDirectory(prefix="leukoview-api-") as tmp:
        paths = []
        for k, (_, data) in enumerate(uploads):
            path = Path(tmp) / _safe_name(uploads[k][0], k)
            path.write_bytes(data)
            paths.append(path)
        df = score_files(paths, predictor, base=Path(tmp), workers=1)
    rows = df.to_dict("records")
    return [{**{k: _clean(v) for k, v in r.items()}, "file": name} for r, (name, _) in zip(rows, uploads, strict=True)]


def refusal_status(row: dict) -> int:
    """The status a refused image gets alone: 413 over a size or pixel limit, else 422."""
    return 413 if TOO_LARGE.search(row.get("error") or "") else 422


def _external_summary(b) -> dict:
    out = {}
    for name, r in (audits.result(b, audits.EXTERNAL, {}) or {}).items():
        pv = r.get("positive_vs_normal") or {}
        out[name] = {"images": r["images"], "normal_called_positive": r["positive_decision_among_normal"]["rate"],
                     "own_type_balanced": r["balanced_own_type"],
                     "positive_vs_normal_roc_auc": (pv.get("roc_auc") or {}).get("value")}
    return out


def create_app(models_dir: Path | None = None, *, default_bundle: str | None = None, token: str | None = None,
               max_request_bytes: int = MAX_BYTES) -> FastAPI:
    """The API over the bundles in ``models_dir`` (default: the configured models folder). ``token``: default
    ``$LEUKOVIEW_API_TOKEN`` (empty: no check)."""
    models = _Models(Path(models_dir) if models_dir else settings.models_dir(), default_bundle)
    token = os.environ.get(TOKEN_ENV, "") if token is None else token
    app = FastAPI(title="leukoview scoring API", version="1",
                  description="Research and education tool, not a medical device: every result needs a qualified "
                              "reviewer. Decisions: positive / negative at the bundle's threshold, 'cannot assess' "
                              "(out of distribution), or 'not a blood-smear image' (refused by the input gate).")

    @app.middleware("http")
    async def limit_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_request_bytes:
            return JSONResponse({"detail": f"request of {int(length) / 2**20:.0f} MB is above the "
                                           f"{max_request_bytes // 2**20} MB limit"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(Exception)
    async def no_traceback(request: Request, exc: Exception):  # a bug answers 500 with a message, never a trace
        LOG.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); the server log has the details"},
                            status_code=500)

    def check_token(request: Request) -> None:
        if not token:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer <LEUKOVIEW_API_TOKEN>'",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "default_bundle": models.default}

    @app.get("/v1/models", dependencies=[Depends(check_token)])
    def list_models() -> dict:
        out = []
        for b in list_bundles(models.models_dir, verify=True):
            out.append({"id": b.id, "task": b.task, "title": tasks.task_title(b.task), "classes": b.classes,
                        "positive": b.positive, "threshold": b.threshold, "weights_sha256": b.card.weights_sha256,
                        "recommended": b.id == (tasks.TASKS[b.task].recommended if b.task in tasks.TASKS else ""),
                        "default": b.id == models.default, "external": _external_summary(b),
                        "intended_use": b.card.intended_use})
        return {"models": out, "limits": {"max_request_bytes": max_request_bytes, "max_pixels": MAX_PIXELS,
                                          "max_files": MAX_FILES}}

    @app.post("/v1/score", dependencies=[Depends(check_token)])
    def score(files: list[UploadFile] = File(..., description="one or more images"),
              bundle: str = Form("", description="a bundle id from /v1/models (default: the server's)")) -> dict:
        if len(files) > MAX_FILES:
            raise HTTPException(413, f"{len(files)} images in one request; the limit is {MAX_FILES}")
        predictor, lock = models.predictor(bundle or models.default)
        uploads = [(f.filename or f"image{k}", f.file.read()) for k, f in enumerate(files)]
        with lock:  # one scoring at a time per model: the network and its buffers are shared
            rows = score_bytes(predictor, uploads)
        refused = [r for r in rows if r.get("error") or r.get("gate")]
        if len(refused) == len(rows):
            first = refused[0]
            raise HTTPException(refusal_status(first), f"{first['file']}: " + (first.get("error") or
                                "not a stained blood-smear image (" + str(first.get("gate")) + ")"))
        b = predictor.bundle
        adapted = b.card.adapted
        return {"bundle": b.id, "weights_sha256": b.card.weights_sha256, "threshold": b.threshold,
                "adapted": {"site": adapted["site"], "base": adapted["base"]["id"],
                            "recommended": adapted["recommended"]} if adapted else None,
                "results": rows}

    return app


def serve(*, host: str = "127.0.0.1", port: int = 8000, bundle: str | None = None) -> None:
    import uvicorn

    uvicorn.run(create_app(default_bundle=bundle), host=host, port=port, log_level="info")
