"""workflow layer of runnerlib."""
