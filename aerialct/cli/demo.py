"""`aerialct demo` (not yet registered)."""
