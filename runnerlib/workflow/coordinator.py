"""HTTP client of the coordinator: submit triggers, ask about jobs. Standard library only (urllib).

Why urllib and not requests/httpx: the client needs exactly four things that are easier to guarantee when
nothing is hidden: no redirect ever followed implicitly (urllib would forward the bearer token to wherever a
redirect points, and turn a POST into a GET), TLS verification with a chosen CA file, per-attempt timeouts,
and an exact count of attempts.

- POST {url}/api/v1/jobs/{job_id}/triggers, body = the triggers document of one operation,
  `Authorization: Bearer <token>`, `Idempotency-Key: <operation_id>`; 201 (or 200/202) means accepted, and
  409 means the coordinator already has this operation (accepted before a retry). The same body and key are
  sent on every retry, so a coordinator that honours the key creates the jobs once.
- GET {url}/api/v1/jobs?name=<job name>[&workflow_run=<id>] -> {"jobs": [{"job_id", "name", "status",
  "exit_code", "created_at", "finished_at", "outputs"}, ...]} newest first (the endpoint runnerlib defines for
  is_job_running / get_job_result; see docs/workflows.md).
- TLS: the system CA store, or `cafile` (default: REACTORCIDE_COORDINATOR_CA_FILE).
- HTTPS is required unless allow_insecure_transport; a redirect is followed only to the same scheme, host
  and port (307/308 keep the method and body), never to plain HTTP, never to another host (the token would
  go with it).
- Retries: connection errors, timeouts, dropped connections, 5xx and 429, at most `attempts` tries with
  exponential backoff and jitter (Retry-After honoured up to `max_backoff`). 4xx fail at once with the
  coordinator's message, masked.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["CoordinatorClient", "CoordinatorError", "JobState"]

RUNNING_STATES = frozenset({"queued", "pending", "submitted", "running", "assigned", "starting"})
# A reply bigger than this is not a coordinator reply we can use; reading it whole would be a memory attack.
MAX_REPLY_BYTES = 4 * 1024 * 1024
MAX_REDIRECTS = 3


class Masker(Protocol):
    def mask_text(self, text: str) -> str: ...

    def add(self, value: str | bytes, *, source: str) -> bool: ...


class CoordinatorError(RuntimeError):
    """The coordinator refused or could not be reached. The message is masked and names the request."""

    def __init__(self, message: str, *, status: int | None = None, retriable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retriable = retriable


@dataclass
class JobState:
    """One job as the coordinator (or the local workflow state) reports it."""

    name: str
    status: str
    job_id: str | None = None
    exit_code: int | None = None
    outputs: dict[str, Any] | None = None
    created_at: str | None = None
    finished_at: str | None = None

    @property
    def running(self) -> bool:
        return self.status.lower() in RUNNING_STATES

    def as_result(self) -> dict[str, Any]:
        """The dict get_job_result returns."""
        return {"job_name": self.name, "status": self.status, "exit_code": self.exit_code,
                "job_id": self.job_id, "outputs": self.outputs or {}, "created_at": self.created_at,
                "finished_at": self.finished_at}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Return 3xx responses to the caller instead of following them (the client decides, see module doc)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


class CoordinatorClient:
    """Talks to the coordinator for one job.

    Example::

        client = CoordinatorClient("https://ci.example.com", token, registry=registry)
        client.post_triggers("job-42", {"type": "trigger_job", "operation_id": op_id, ..., "jobs": [...]})
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        registry: Masker | None = None,
        allow_insecure_transport: bool = False,
        cafile: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise CoordinatorError(f"coordinator URL must be an https:// URL, got {parsed.scheme or 'no'} scheme")
        if parsed.scheme == "http" and not allow_insecure_transport:
            raise CoordinatorError(
                "coordinator URL is plain http: the API token would cross the network in clear; use https, "
                "or pass --allow-insecure-transport (REACTORCIDE_ALLOW_INSECURE_TRANSPORT=true) for a local test"
            )
        if parsed.username or parsed.password:
            raise CoordinatorError("coordinator URL must not carry credentials; the token is sent as a header")
        if not token:
            raise CoordinatorError("no API token (REACTORCIDE_API_TOKEN) for the coordinator")
        if attempts < 1:
            raise CoordinatorError("attempts must be at least 1")
        self.base_url = url.rstrip("/")
        self._token = token
        self._registry = registry
        if registry is not None:
            registry.add(token, source="REACTORCIDE_API_TOKEN")
        self.allow_insecure_transport = allow_insecure_transport
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        # The worker may name a private CA for its coordinator; every client in the job (the runner's and
        # trusted steps') then trusts it without each caller passing it on.
        cafile = cafile or os.environ.get("REACTORCIDE_COORDINATOR_CA_FILE") or None
        context = ssl_context or ssl.create_default_context(cafile=cafile)
        self._opener = urllib.request.build_opener(
            _NoRedirect(), urllib.request.HTTPSHandler(context=context)
        )

    def __repr__(self) -> str:  # never the token
        return f"CoordinatorClient({self.base_url!r})"

    # --- masking -----------------------------------------------------------------------------------------

    def mask(self, text: str) -> str:
        """Mask the token (and every other registered secret) in text that may be shown."""
        if self._registry is not None:
            text = self._registry.mask_text(text)
        return text.replace(self._token, "***")

    # --- API ---------------------------------------------------------------------------------------------

    def post_triggers(self, job_id: str, document: dict[str, Any]) -> dict[str, Any]:
        """POST one operation's triggers; returns the coordinator's JSON reply (may be {})."""
        if not job_id:
            raise CoordinatorError("no job id (REACTORCIDE_JOB_ID) to post triggers for")
        operation_id = document.get("operation_id")
        if not isinstance(operation_id, str) or not operation_id:
            raise CoordinatorError("a triggers document needs an operation_id (the idempotency key)")
        path = f"/api/v1/jobs/{urllib.parse.quote(job_id, safe='')}/triggers"
        body = json.dumps(document, separators=(",", ":")).encode("utf-8")
        status, reply = self._request("POST", path, body=body, idempotency_key=operation_id,
                                      ok=(200, 201, 202, 409))
        return reply if isinstance(reply, dict) else {}

    def list_jobs(self, name: str, *, workflow_run: str | None = None) -> list[JobState]:
        """Jobs with this name, newest first."""
        query = {"name": name}
        if workflow_run:
            query["workflow_run"] = workflow_run
        status, reply = self._request("GET", "/api/v1/jobs?" + urllib.parse.urlencode(query), ok=(200,))
        jobs = reply.get("jobs") if isinstance(reply, dict) else reply
        if not isinstance(jobs, list):
            raise CoordinatorError('coordinator reply to GET /api/v1/jobs has no "jobs" list')
        out: list[JobState] = []
        for item in jobs:
            if not isinstance(item, dict) or not isinstance(item.get("status"), str):
                raise CoordinatorError('coordinator reply to GET /api/v1/jobs: each job needs a "status"')
            exit_code = item.get("exit_code")
            out.append(JobState(
                name=str(item.get("name") or item.get("job_name") or name),
                status=item["status"],
                job_id=str(item["job_id"]) if item.get("job_id") is not None else None,
                exit_code=exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else None,
                outputs=item.get("outputs") if isinstance(item.get("outputs"), dict) else None,
                created_at=item.get("created_at"),
                finished_at=item.get("finished_at"),
            ))
        return out

    # --- transport ---------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, body: bytes | None = None, idempotency_key: str | None = None,
                 ok: tuple[int, ...]) -> tuple[int, Any]:
        what = f"{method} {path.split('?')[0]}"
        last_error = ""
        for attempt in range(1, self.attempts + 1):
            delay: float | None = None
            try:
                status, headers, data = self._send(method, self.base_url + path, body, idempotency_key)
            except CoordinatorError:
                raise
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                # OSError covers ConnectionError, TimeoutError (socket timeouts) and ssl.SSLError.
                reason = getattr(exc, "reason", None) or exc
                if isinstance(reason, ssl.SSLCertVerificationError) or isinstance(exc, ssl.SSLCertVerificationError):
                    raise CoordinatorError(self.mask(
                        f"coordinator {what}: TLS certificate not trusted ({reason}); "
                        "give the CA with REACTORCIDE_COORDINATOR_CA_FILE"
                    )) from None
                last_error = f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
            else:
                if status in ok:
                    return status, _parse_json(data)
                message = _server_message(data)
                if status == 429 or status >= 500:
                    last_error = f"HTTP {status}" + (f": {message}" if message else "")
                    delay = _retry_after(headers.get("Retry-After"), self.max_backoff)
                else:
                    raise CoordinatorError(self.mask(
                        f"coordinator refused {what}: HTTP {status} {http.client.responses.get(status, '')}"
                        + (f": {message}" if message else "")
                    ).strip(), status=status)
            if attempt < self.attempts:
                if delay is None:
                    delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                    delay *= random.uniform(0.5, 1.0)  # jitter: many jobs retrying must not stampede
                self._sleep(delay)
        raise CoordinatorError(
            self.mask(f"coordinator {what} failed after {self.attempts} attempts: {last_error}"), retriable=True
        )

    def _send(self, method: str, url: str, body: bytes | None,
              idempotency_key: str | None) -> tuple[int, Any, bytes]:
        origin = urllib.parse.urlsplit(url)
        for _ in range(MAX_REDIRECTS + 1):
            request = urllib.request.Request(url, data=body, method=method)
            request.add_header("Authorization", f"Bearer {self._token}")
            request.add_header("Accept", "application/json")
            request.add_header("User-Agent", "runnerlib")
            if body is not None:
                request.add_header("Content-Type", "application/json")
            if idempotency_key:
                request.add_header("Idempotency-Key", idempotency_key)
            try:
                response = self._opener.open(request, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                response = exc
            with response:
                status = response.status if hasattr(response, "status") else response.code
                data = response.read(MAX_REPLY_BYTES + 1)
                headers = response.headers
            if status not in (301, 302, 303, 307, 308):
                return status, headers, data[:MAX_REPLY_BYTES]
            location = headers.get("Location")
            if not location:
                return status, headers, data
            target = urllib.parse.urlsplit(urllib.parse.urljoin(url, location))
            shown = f"{target.scheme}://{target.hostname}{':' + str(target.port) if target.port else ''}"
            if target.scheme != "https" and not (self.allow_insecure_transport and origin.scheme == "http"
                                                 and target.scheme == "http"):
                raise CoordinatorError(self.mask(
                    f"coordinator redirected {method} to plain HTTP ({shown}); refused: "
                    "the token would cross the network in clear"), status=status)
            if (target.scheme, target.hostname, target.port) != (origin.scheme, origin.hostname, origin.port):
                raise CoordinatorError(self.mask(
                    f"coordinator redirected {method} to another origin ({shown}); refused: "
                    "the token is only sent to the configured coordinator"), status=status)
            if method == "POST" and status not in (307, 308):
                raise CoordinatorError(f"coordinator answered POST with HTTP {status} (a redirect that would "
                                       "drop the body); refused", status=status)
            url = urllib.parse.urlunsplit(target)
        raise CoordinatorError(f"coordinator redirected more than {MAX_REDIRECTS} times")


def _parse_json(data: bytes) -> Any:
    if not data.strip():
        return {}
    try:
        return json.loads(data)
    except ValueError:
        return {}


def _server_message(data: bytes) -> str:
    """The coordinator's own explanation: its JSON "error"/"message", else the start of the text."""
    parsed = _parse_json(data)
    if isinstance(parsed, dict):
        for key in ("error", "message", "detail"):
            if isinstance(parsed.get(key), str):
                return " ".join(parsed[key].split())[:500]
    text = data[:500].decode("utf-8", errors="replace")
    return " ".join(text.split())


def _retry_after(value: str | None, cap: float) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, min(cap, float(value)))
    except ValueError:
        return None
