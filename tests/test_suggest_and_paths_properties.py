"""Properties of the small parsers issue 13 added: "did you mean" over a model's schema, and telling a local
source path from a URL (hypothesis)."""

from __future__ import annotations

import os
import re

from hypothesis import given
from hypothesis import strategies as st

from runnerlib.jobs import StepSpec
from runnerlib.local_checkout import absolute_source, is_local_path
from runnerlib.suggest import did_you_mean, known_keys, unknown_key_message
from runnerlib.workflow.models import Workflow

STEP_KEYS = sorted(StepSpec.model_json_schema()["properties"])
SCHEMAS = [StepSpec.model_json_schema(), Workflow.model_json_schema()]
parts = st.one_of(st.text(max_size=12), st.integers(min_value=-3, max_value=50))


@given(st.sampled_from(SCHEMAS), st.lists(parts, min_size=1, max_size=6))
def test_unknown_key_message_never_fails_and_only_suggests_real_keys(schema, loc) -> None:  # noqa: ANN001
    message = unknown_key_message({"type": "extra_forbidden", "loc": tuple(loc)}, schema)
    assert message is not None and message.startswith(f"unknown key {str(loc[-1])!r}")
    suggested = re.search(r"did you mean '(.*)'\?\)$", message)
    if suggested:
        assert suggested.group(1) in known_keys(schema, tuple(loc))


@given(st.sampled_from(STEP_KEYS), st.data())
def test_a_step_key_with_one_letter_dropped_is_suggested(key: str, data: st.DataObject) -> None:
    if len(key) < 5:
        return
    i = data.draw(st.integers(min_value=0, max_value=len(key) - 1))
    typo = key[:i] + key[i + 1:]
    if typo in STEP_KEYS:
        return
    assert did_you_mean(typo, STEP_KEYS) == f" (did you mean {key!r}?)"


def test_other_errors_are_left_alone() -> None:
    assert unknown_key_message({"type": "missing", "loc": ("command",)}, SCHEMAS[0]) is None


@given(st.sampled_from(["https", "http", "ssh", "git", "file", "git+ssh", "s3"]), st.text(max_size=30))
def test_urls_are_not_local_paths(scheme: str, rest: str) -> None:
    url = f"{scheme}://{rest}"
    assert not is_local_path(url) and absolute_source(url) == url


@given(st.lists(st.text(alphabet="abc._-", min_size=1, max_size=6), min_size=1, max_size=4))
def test_relative_local_paths_become_absolute_against_the_cwd(pieces: list[str]) -> None:
    rel = "/".join(pieces)
    assert is_local_path(rel)
    assert absolute_source(rel) == os.path.abspath(rel)
    assert absolute_source("/abs/" + rel) == "/abs/" + rel  # absolute ones are kept as given


def test_scp_like_git_addresses_are_remote() -> None:
    assert not is_local_path("git@github.com:user/repo.git")
    assert absolute_source("git@github.com:user/repo.git") == "git@github.com:user/repo.git"
