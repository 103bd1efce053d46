"""Health checks (SPEC §5): check model, concurrent runner, single-flight cache and the concrete checks."""
