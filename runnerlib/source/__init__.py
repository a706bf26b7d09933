"""source layer of runnerlib."""
