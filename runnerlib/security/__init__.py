"""The security core: masking, secrets, paths, the sandbox and /proc hardening.

Nothing in this package imports from the rest of runnerlib. Safe, high-level recipes live at this level
(a masked stream, a checked path, a sandboxed spawn); the raw kernel calls (Landlock, seccomp, prctl,
openat2) are fenced in `runnerlib.security.lowlevel`, which only this package imports.
"""
