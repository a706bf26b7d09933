"""Loading plugin files, only from trusted places.

Plugins are Python code that runs in the runner with every secret in reach, so they come only from:
- <workspace_root>/ci/.reactorcide/plugins (the trusted CI checkout; loaded once the sources are ready), and
- directories given with --plugin-dir / REACTORCIDE_PLUGIN_DIR (checked by security.paths.check_config_path:
  inside the workspace, no `..`, no symlinked component).

Never from the untrusted trees (<workspace_root>/src or code_dir, the untrusted copy, the hand-over area
<workspace_root>/artifacts): a pull request could otherwise add a plugin and run code with the secrets (a file
an untrusted step leaves in the hand-over area is root's after the take-over, so the owner check below passes). Such a directory is refused with an error, not skipped. Files and
directories writable by group or others, or owned by another user than root or the runner, are refused too:
someone else could change them between the check and the load.

A plugin file is a Python module that either defines `register(manager)` (called with the PluginManager), or
a module-level `PLUGINS` list of Plugin instances, or calls `runnerlib.register_plugin(...)` itself.
Files are loaded in name order; names starting with '_' or '.' are ignored.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
from pathlib import Path

from runnerlib.plugins import Plugin, PluginManager

CI_PLUGIN_SUBDIR = ".reactorcide/plugins"


class PluginLoadError(RuntimeError):
    """A plugin directory or file that must not or cannot be loaded; names the path and the rule."""


def ci_plugin_dir(ci_dir: str | os.PathLike[str]) -> Path:
    """<ci_dir>/.reactorcide/plugins."""
    return Path(ci_dir) / CI_PLUGIN_SUBDIR


def _inside(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
        return True
    except ValueError:
        return False


def check_plugin_dir(directory: str | os.PathLike[str], *, workspace_root: str, untrusted_dirs: list[str]) -> Path:
    """Refuse a plugin directory in the untrusted tree or outside the workspace; return it normalised."""
    from runnerlib.security import paths

    try:
        checked = paths.check_config_path("plugin_dir", os.fspath(directory), workspace_root)
    except paths.PathPolicyError as exc:
        raise PluginLoadError(str(exc)) from None
    real = Path(os.path.realpath(checked))
    for untrusted in untrusted_dirs:
        bad = Path(os.path.realpath(untrusted))
        if _inside(real, bad) or _inside(checked, Path(untrusted)):
            raise PluginLoadError(
                f"plugin_dir {checked}: refused: it lies in the untrusted source tree {untrusted}; plugins load "
                f"only from the CI tree (<ci>/{CI_PLUGIN_SUBDIR}) or a trusted --plugin-dir")
    return checked


def _check_owner_and_mode(path: Path, st: os.stat_result) -> None:
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PluginLoadError(f"plugin path {path}: refused: writable by group or others (mode "
                              f"{stat.S_IMODE(st.st_mode):o})")
    if st.st_uid not in (0, os.geteuid()):
        raise PluginLoadError(f"plugin path {path}: refused: owned by uid {st.st_uid}, not by root or the runner")


def plugin_files(directory: Path) -> list[Path]:
    """The plugin files of a directory, in name order, after the ownership and mode checks."""
    try:
        st = os.stat(directory, follow_symlinks=False)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise PluginLoadError(f"plugin_dir {directory}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise PluginLoadError(f"plugin_dir {directory}: not a directory")
    _check_owner_and_mode(directory, st)
    files = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".py") or name.startswith(("_", ".")):
            continue
        path = directory / name
        fst = os.stat(path, follow_symlinks=False)
        if not stat.S_ISREG(fst.st_mode):
            raise PluginLoadError(f"plugin file {path}: refused: not a regular file (symlinks are not followed)")
        _check_owner_and_mode(path, fst)
        files.append(path)
    return files


def load_plugin_file(path: Path, manager: PluginManager) -> list[str]:
    """Execute one plugin file and register what it offers; return the names of the plugins it added."""
    before = {p.name for p in manager.plugins}
    module_name = f"runnerlib_plugin_{abs(hash(str(path))):x}_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginLoadError(f"plugin file {path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
        register = getattr(module, "register", None)
        if callable(register):
            register(manager)
        for plugin in getattr(module, "PLUGINS", []) or []:
            if not isinstance(plugin, Plugin):
                raise PluginLoadError(f"plugin file {path}: PLUGINS holds a {type(plugin).__name__}, not a Plugin")
            if plugin.name not in {p.name for p in manager.plugins}:
                manager.register(plugin)
    except PluginLoadError:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - reported with the file named; caller masks
        from runnerlib.plugins import failure_text

        raise PluginLoadError(f"plugin file {path}: {failure_text(exc)}") from None
    return sorted({p.name for p in manager.plugins} - before)


def load_plugins(
    directories: list[str],
    manager: PluginManager,
    *,
    workspace_root: str,
    untrusted_dirs: list[str],
) -> list[str]:
    """Load every plugin file of `directories` (trusted places only) into `manager`; return plugin names."""
    loaded: list[str] = []
    for directory in directories:
        checked = check_plugin_dir(directory, workspace_root=workspace_root, untrusted_dirs=untrusted_dirs)
        for path in plugin_files(checked):
            loaded += load_plugin_file(path, manager)
    return loaded
