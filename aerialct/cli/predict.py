"""`aerialct predict` (not yet registered)."""
