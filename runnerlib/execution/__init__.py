"""execution layer of runnerlib."""
