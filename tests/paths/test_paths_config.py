"""check_config_path: each refused value from the issue, the accepted forms, and a property test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runnerlib.security.paths import PathPolicyError, check_config_path, check_link_target, split_relative


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("/job/../tmp/x", "'..'"),
        ("/jobX", "inside the workspace root /job"),
        ("/jobX/src", "inside the workspace root /job"),
        ("/job/src\0evil", "NUL"),
        ("", "empty"),
        ("   ", "empty"),
        ("~", "'~'"),
        ("~/src", "'~'"),
        ("/tmp/x", "inside the workspace root"),
        ("src/../../etc", "'..'"),
        (None, "must be set"),
        ("/job/src\n", "control characters"),
        ("/job/a\tb", "control characters"),
        (" /job/src", "whitespace"),
    ],
)
def test_refused_values_name_field_and_rule(value: str | None, rule: str) -> None:
    with pytest.raises(PathPolicyError) as info:
        check_config_path("code_dir", value, "/job")
    message = str(info.value)
    assert message.startswith("code_dir: ")
    assert rule in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("/job/src/", "/job/src"), ("src", "/job/src"), ("/job", "/job"), ("/job/./a//b", "/job/a/b"),
     ("./triggers.json", "/job/triggers.json")],
)
def test_accepted_values_are_normalised(value: str, expected: str) -> None:
    assert check_config_path("code_dir", value, "/job") == Path(expected)


def test_symlinked_component_leading_outside_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "job"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "plugins")
    with pytest.raises(PathPolicyError, match="plugin_dirs: must not pass through a symlink"):
        check_config_path("plugin_dirs", str(root / "plugins" / "mine"), root)
    # A symlink that stays inside is refused too: Workspace operations never traverse symlinks.
    (root / "real").mkdir()
    os.symlink("real", root / "alias")
    with pytest.raises(PathPolicyError, match="symlink"):
        check_config_path("job_dir", "alias", root)
    assert check_config_path("job_dir", "real/sub", root) == root / "real" / "sub"


def test_root_itself_is_checked() -> None:
    with pytest.raises(PathPolicyError, match="workspace root"):
        check_config_path("code_dir", "/job/src", "relative")
    with pytest.raises(PathPolicyError, match="workspace root"):
        check_config_path("code_dir", "/job/src", "/job/../x")


@given(st.text(alphabet=st.sampled_from(list("/.~ab\0-X")), max_size=24))
def test_property_accepted_paths_stay_inside_the_root(value: str) -> None:
    try:
        result = check_config_path("field", value, "/job")
    except PathPolicyError as exc:
        assert str(exc).startswith("field: ")
        return
    text = str(result)
    assert text == "/job" or text.startswith("/job/")
    assert ".." not in result.parts
    assert "\0" not in text
    assert os.path.normpath(text) == text


@given(st.lists(st.sampled_from(["a", "b", "..", ".", ""]), max_size=8))
def test_property_split_relative(parts: list[str]) -> None:
    text = "/".join(parts)
    try:
        out = split_relative(text)
    except PathPolicyError:
        assert ".." in parts or text.startswith("/")
        return
    assert ".." not in out and "" not in out and "." not in out


def _lexical_escape(link_parts: list[str], target: str) -> bool:
    """Resolve target lexically from the link's directory; True if it climbs above the tree."""
    stack = list(link_parts[:-1])
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return True
            stack.pop()
        else:
            stack.append(part)
    return False


@given(st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=4),
       st.lists(st.sampled_from(["a", "..", ".", "x", ""]), min_size=1, max_size=6),
       st.booleans())
def test_property_accepted_link_targets_never_escape(link: list[str], target_parts: list[str], absolute: bool) -> None:
    target = ("/" if absolute else "") + "/".join(target_parts)
    try:
        check_link_target(link, target)
    except PathPolicyError:
        return
    assert not target.startswith("/")
    assert not _lexical_escape(link, target)
    parts = [p for p in target.split("/") if p not in ("", ".")]
    # No `..` after a name: the rule that also defeats links-to-"." (see check_link_target).
    seen_name = False
    for part in parts:
        if part != "..":
            seen_name = True
        assert not (seen_name and part == "..")
