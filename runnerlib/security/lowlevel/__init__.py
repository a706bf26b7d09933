"""Raw kernel interfaces (hazmat): Landlock, seccomp, openat2, prctl, /proc/self memory.

Only `runnerlib.security` imports this package. Every call checks return values (never errno alone) and
raises OSError with the errno; policy decisions are made by the callers, not here.
"""
