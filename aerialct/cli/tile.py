"""`aerialct tile` (not yet registered)."""
