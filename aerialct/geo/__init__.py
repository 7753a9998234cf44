"""Geodata plumbing: outputs (atomic writes, markers), inputs (paths and globs), raster
reading (io), class rasters, AERIALCT_* tags, the window grid, COG finishing, vectors."""
