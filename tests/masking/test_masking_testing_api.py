"""runnerlib.testing is public: its strategies generate what they promise and its assertion catches leaks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runnerlib.testing import assert_no_fragment, secret_sets, texts_with_secrets, write_splits


@given(secrets=secret_sets())
def test_secret_sets_are_distinct_and_long_enough(secrets: list[bytes]) -> None:
    assert secrets and len(secrets) == len(set(secrets))
    assert all(len(s) >= 4 and s.strip() and b"*" not in s for s in secrets)


@given(data=st.data())
def test_texts_contain_their_planted_secrets(data: st.DataObject) -> None:
    secrets = data.draw(secret_sets())
    planted = data.draw(texts_with_secrets(secrets))
    assert all(s in planted.data for s in planted.secrets)
    assert all(c in planted.data for c in planted.clear)


@given(text=st.binary(max_size=100), data=st.data())
def test_write_splits_rejoin_to_the_text(text: bytes, data: st.DataObject) -> None:
    assert b"".join(data.draw(write_splits(text))) == text


def test_generators_reach_the_hard_cases() -> None:
    # Over many draws: a secret that is a prefix of another, and the repeated-prefix shape.
    seen = {"prefix": False, "repeat": False}

    @given(secret_sets())
    def probe(secrets: list[bytes]) -> None:
        for a in secrets:
            for b in secrets:
                if a != b and b.startswith(a):
                    seen["prefix"] = True
                if a != b and len(b) > len(a) and b.endswith(a) and b[: len(b) - len(a)] == a[: len(b) - len(a)]:
                    seen["repeat"] = True

    probe()
    assert seen["prefix"] and seen["repeat"]


def test_assert_no_fragment_names_position_not_bytes() -> None:
    with pytest.raises(AssertionError) as info:
        assert_no_fragment(b"xx hunter2 yy", [b"my-hunter2-pw"])
    assert "hunt" not in str(info.value) and "secret #0" in str(info.value)
    assert_no_fragment(b"xx hunt yy", [b"my-hunter2-pw"], allowed=[b"xx hunt yy"])
    assert_no_fragment(b"xx *** yy", [b"my-hunter2-pw"])
