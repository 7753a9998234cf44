"""`aerialct vectorize` (not yet registered)."""
