"""`aerialct info` (not yet registered)."""
