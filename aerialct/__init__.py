"""aerialct: mapping from aerial imagery.

The library never prints or exits; the command-line layer in :mod:`aerialct.cli`
parses arguments, calls one library function per verb and renders its result.
Heavy dependencies (torch, timm, geopandas) are imported inside functions so that
``aerialct --help`` stays instant.
"""

__version__ = "0.1.0"
