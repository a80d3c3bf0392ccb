"""In-context data: seeded, batched task generators (no model code)."""
