"""Losses: segmentation (CE + Dice), CT patch contrast, MS/CS multi/cross-scale contrast."""
