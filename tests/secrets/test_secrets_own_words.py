"""own_words: the summary and status lines mask their user parts with every registered value, and never
runnerlib's own words, whatever is registered (status words included). Property-based, plus the control."""

from __future__ import annotations

import io
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runnerlib.execution.logs import JobLog
from runnerlib.execution.own_words import STATUSES, Own, render, summary_document
from runnerlib.execution.scheduler import StepResult
from runnerlib.security.registry import SecretRegistry
from runnerlib.testing import assert_no_fragment

WORDS = sorted(STATUSES) + ["STATUS", "DURATION", "success (exit", "finished", "exit", "trusted", "untrusted"]
ALPHABET = st.characters(min_codepoint=33, max_codepoint=126)


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[str], list[StepResult]]:
    secrets = draw(st.lists(st.text(ALPHABET, min_size=5, max_size=12), min_size=1, max_size=4, unique=True))
    secrets += draw(st.lists(st.sampled_from(WORDS), max_size=4))  # values registered in band, e.g. "failed"
    results = []
    for index in range(draw(st.integers(1, 4))):
        name = f"s{index}-" + draw(st.from_regex(r"[A-Za-z0-9_.-]{0,20}", fullmatch=True))
        reason = draw(st.none() | st.sampled_from(secrets).map(lambda s: f"tool said: {s} (!)"))
        status = draw(st.sampled_from(sorted(STATUSES - {"allowed_failure"})))
        results.append(StepResult(name=name, status=status, exit_code=draw(st.none() | st.integers(-9, 255)),
                                  started=1.0, finished=1.0 + draw(st.floats(0, 500)), attempts=1, reason=reason,
                                  trust=draw(st.sampled_from(["trusted", "untrusted"]))))
    return secrets, results


def _registry(values: list[str]) -> SecretRegistry:
    registry = SecretRegistry(background_merge=False)
    registry.add_many(values, source="test")
    return registry


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_summary_json_keeps_statuses_and_masks_user_fields(case: tuple[list[str], list[StepResult]]) -> None:
    secrets, results = case
    registry = _registry(secrets)
    document = summary_document(job="job", job_id=None, exit_code=1, steps=results, plugins=[("p", 0.1, 1)],
                                mask=registry.mask_text)
    assert [s["status"] for s in document["steps"]] == [r.status for r in results]
    assert [s["trust"] for s in document["steps"]] == [r.trust for r in results]
    assert [s["exit_code"] for s in document["steps"]] == [r.exit_code for r in results]
    reasons = json.dumps([s["reason"] for s in document["steps"]]).encode()
    assert_no_fragment(reasons, [s.encode() for s in secrets if s not in WORDS],
                       allowed=[b'[null, "tool said: *** (!)"]'])
    names = " ".join(s["name"] for s in document["steps"])
    assert not any(value in names for value in secrets if value not in WORDS)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_summary_table_keeps_statuses(case: tuple[list[str], list[StepResult]]) -> None:
    secrets, results = case
    registry = _registry(secrets)
    out = io.BytesIO()
    JobLog(out, mask=registry.mask_text).summary(results, total=1.5, exit_code=1)
    rows = out.getvalue().decode().splitlines()[2:2 + len(results)]
    assert [row.split()[1] for row in rows] == [r.status for r in results]
    assert out.getvalue().decode().rstrip().endswith("job job: failed (exit 1) in 1.50s")
    # Control: the same text masked whole loses runnerlib's words when they are registered.
    whole = registry.mask_text(out.getvalue().decode())
    if any(r.status in secrets for r in results):
        assert [row.split()[1] for row in whole.splitlines()[2:2 + len(results)]] != [r.status for r in results]


def test_own_renders_user_parts_masked_and_words_untouched() -> None:
    registry = _registry(["failed", "deploy-prod", "0.50"])
    line = Own("{name} {status} in {seconds:.2f}s", name="deploy-prod", status=Own("failed"), seconds=0.5)
    assert render(line, registry.mask_text) == "*** failed in 0.50s"
    assert render(str(line), registry.mask_text) == "*** *** in ***s"  # a plain str is masked whole
    assert "deploy" not in repr(line)
