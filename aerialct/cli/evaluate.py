"""`aerialct evaluate` (not yet registered)."""
