"""Settings: `base` from the environment, `test` for the suite."""
