"""Raster and vector I/O helpers: atomic writes, checked opening, grid comparison."""
