"""`aerialct train` (not yet registered)."""
