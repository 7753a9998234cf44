"""`aerialct synth` (not yet registered)."""
