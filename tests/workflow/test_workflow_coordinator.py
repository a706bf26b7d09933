"""The coordinator client against a real HTTP(S) server on 127.0.0.1, with injected failures."""

from __future__ import annotations

import json
import uuid

import pytest
from wf_coordinator_server import TOKEN, CoordinatorServer, Plan

from runnerlib.security.registry import SecretRegistry
from runnerlib.workflow.coordinator import CoordinatorClient, CoordinatorError


def document(*names: str) -> dict:
    return {"type": "trigger_job", "operation_id": str(uuid.uuid4()), "trigger_type": "runnerlib",
            "jobs": [{"job_name": n} for n in names]}


def client(server: CoordinatorServer, certificate, **kw) -> CoordinatorClient:
    kw.setdefault("sleep", lambda _s: None)
    kw.setdefault("timeout", 5.0)
    return CoordinatorClient(server.url, TOKEN, cafile=str(certificate[0]), registry=SecretRegistry(), **kw)


def test_post_over_https_with_bearer_token_and_idempotency_key(https_server, certificate) -> None:
    doc = document("deploy")
    reply = client(https_server, certificate).post_triggers("job-1", doc)
    assert reply == {"accepted": 1}
    request = https_server.state.requests[0]
    assert request["path"] == "/api/v1/jobs/job-1/triggers"
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["Idempotency-Key"] == doc["operation_id"]
    assert json.loads(request["body"]) == doc


def test_untrusted_certificate_is_refused(https_server) -> None:
    # Without the test CA the self-signed certificate must not be accepted (no silent "verify=False").
    plain = CoordinatorClient(https_server.url, TOKEN, sleep=lambda _s: None)
    with pytest.raises(CoordinatorError, match="certificate not trusted"):
        plain.post_triggers("job-1", document("a"))
    assert https_server.state.requests == []


def test_500s_then_success_are_retried_and_create_the_jobs_once(https_server, certificate) -> None:
    https_server.state.plans += [Plan(status=500, body={"error": "db down"}), Plan(status=503, body=b"")]
    sleeps: list[float] = []
    doc = document("build", "test")
    client(https_server, certificate, sleep=sleeps.append).post_triggers("job-1", doc)
    assert len(https_server.state.requests) == 3
    assert len(sleeps) == 2 and sleeps[1] >= sleeps[0] * 0.5  # backoff grows (with jitter)
    keys = {r["headers"]["Idempotency-Key"] for r in https_server.state.requests}
    bodies = {r["body"] for r in https_server.state.requests}
    assert keys == {doc["operation_id"]} and len(bodies) == 1     # the same request each time
    assert https_server.state.created == {doc["operation_id"]: doc["jobs"]}


def test_retry_after_a_lost_reply_is_idempotent(https_server, certificate) -> None:
    # The coordinator created the jobs but the reply was lost: the retry must not create them again.
    doc = document("deploy")
    c = client(https_server, certificate)
    c.post_triggers("job-1", doc)
    c.post_triggers("job-1", doc)  # 409 duplicate: accepted, not an error
    assert list(https_server.state.created) == [doc["operation_id"]]


def test_bounded_retries_then_a_clear_error(https_server, certificate) -> None:
    https_server.state.plans += [Plan(status=502, body={"error": "bad gateway"})] * 10
    with pytest.raises(CoordinatorError, match=r"failed after 3 attempts: HTTP 502: bad gateway") as info:
        client(https_server, certificate, attempts=3).post_triggers("job-1", document("a"))
    assert info.value.retriable
    assert len(https_server.state.requests) == 3


def test_slow_reply_times_out_and_is_retried(https_server, certificate) -> None:
    https_server.state.plans += [Plan(delay=1.5)]
    doc = document("a")
    client(https_server, certificate, timeout=0.3).post_triggers("job-1", doc)
    assert len(https_server.state.requests) == 2
    assert doc["operation_id"] in https_server.state.created


def test_dropped_connection_is_retried(https_server, certificate) -> None:
    https_server.state.plans += [Plan(drop=True), Plan(drop=True)]
    doc = document("a")
    client(https_server, certificate).post_triggers("job-1", doc)
    assert len(https_server.state.requests) == 3
    assert doc["operation_id"] in https_server.state.created


def test_connection_refused_is_retried_then_reported() -> None:
    c = CoordinatorClient("https://127.0.0.1:9", TOKEN, sleep=lambda _s: None, attempts=2)
    with pytest.raises(CoordinatorError, match="failed after 2 attempts"):
        c.post_triggers("job-1", document("a"))


def test_redirect_to_plain_http_is_refused(https_server, certificate) -> None:
    https_server.state.plans.append(Plan(status=307, location="http://127.0.0.1:1/api/v1/jobs/job-1/triggers"))
    with pytest.raises(CoordinatorError, match="redirected POST to plain HTTP"):
        client(https_server, certificate).post_triggers("job-1", document("a"))
    assert len(https_server.state.requests) == 1  # not followed, not retried


def test_redirect_to_another_host_is_refused(https_server, certificate) -> None:
    https_server.state.plans.append(Plan(status=308, location="https://localhost:1/steal"))
    with pytest.raises(CoordinatorError, match="another origin"):
        client(https_server, certificate).post_triggers("job-1", document("a"))


def test_same_origin_307_is_followed_with_method_and_body(https_server, certificate) -> None:
    https_server.state.plans.append(Plan(status=307, location="/api/v1/jobs/job-1/triggers"))
    doc = document("a")
    client(https_server, certificate).post_triggers("job-1", doc)
    assert [r["method"] for r in https_server.state.requests] == ["POST", "POST"]
    assert doc["operation_id"] in https_server.state.created


def test_urllib_would_follow_the_redirect_to_http(https_server, certificate) -> None:
    """Control: a plain urllib opener follows a GET redirect to http, token header and all."""
    import ssl
    import urllib.error
    import urllib.request

    with CoordinatorServer(TOKEN) as plain:
        https_server.state.plans.append(Plan(status=302, location=plain.url + "/api/v1/jobs?name=x"))
        context = ssl.create_default_context(cafile=str(certificate[0]))
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
        request = urllib.request.Request(https_server.url + "/api/v1/jobs?name=x",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        opener.open(request, timeout=5).read()
        assert plain.state.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"  # leaked in clear


def test_401_is_a_clear_error_with_the_token_masked(https_server, certificate) -> None:
    # The server echoes the token it got (some do): neither it nor a fragment may reach the message.
    https_server.state.plans.append(Plan(status=401, body={"error": f"invalid token {TOKEN} for job-1"}))
    with pytest.raises(CoordinatorError) as info:
        client(https_server, certificate).post_triggers("job-1", document("a"))
    message = str(info.value)
    assert "HTTP 401 Unauthorized" in message and "invalid token" in message
    assert TOKEN not in message and TOKEN[:12] not in message and TOKEN[-12:] not in message
    assert info.value.status == 401 and not info.value.retriable
    assert len(https_server.state.requests) == 1  # a 4xx is not retried


def test_plain_http_needs_the_insecure_flag(http_server) -> None:
    with pytest.raises(CoordinatorError, match="allow-insecure-transport"):
        CoordinatorClient(http_server.url, TOKEN)
    c = CoordinatorClient(http_server.url, TOKEN, allow_insecure_transport=True, sleep=lambda _s: None)
    c.post_triggers("job-1", document("a"))
    assert len(http_server.state.created) == 1


def test_credentials_in_url_and_missing_token_refused() -> None:
    with pytest.raises(CoordinatorError, match="must not carry credentials"):
        CoordinatorClient("https://user:pw@example.com", TOKEN)
    with pytest.raises(CoordinatorError, match="no API token"):
        CoordinatorClient("https://example.com", "")
    assert TOKEN not in repr(CoordinatorClient("https://example.com", TOKEN))


def test_list_jobs(https_server, certificate) -> None:
    https_server.state.jobs = [{"job_id": "9", "name": "deploy", "status": "running"},
                               {"job_id": "8", "name": "deploy", "status": "success", "exit_code": 0},
                               {"job_id": "7", "name": "test", "status": "failed", "exit_code": 2}]
    jobs = client(https_server, certificate).list_jobs("deploy")
    assert [(j.job_id, j.running) for j in jobs] == [("9", True), ("8", False)]
    assert https_server.state.requests[0]["path"] == "/api/v1/jobs?name=deploy"
