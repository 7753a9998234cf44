"""A synthetic, Potsdam-like city: georeferenced RGB orthophoto + labels + building footprints.

The package follows the generator's three stages:

* :mod:`~aerialct.data.synth.layout` plans the town in metres: roads, blocks,
  buildings, cars, clutter and trees, painted as objects on a canvas;
* :mod:`~aerialct.data.synth.render` turns the plan into an image: tree crowns, cast
  shadows, textures, illumination and sensor noise (:func:`generate_scene`), and
  records it as other sensors would (:func:`convert_image`);
* :mod:`~aerialct.data.synth.write` writes scenes, labels and footprints
  (:func:`synth_scene`) and a folder laid out like the ISPRS Potsdam release
  (:func:`synth_potsdam`).

The same seed gives the same scene, bit for bit.
"""

from aerialct.data.synth.layout import (
    BUILDING,
    CAR,
    CLUTTER,
    DEFAULT_CRS,
    DEFAULT_ORIGIN,
    IMPERVIOUS,
    LOW_VEG,
    TREE,
    Building,
)
from aerialct.data.synth.render import SYNTH_DTYPES, SceneArrays, convert_image, generate_scene
from aerialct.data.synth.write import (
    DEFAULT_POTSDAM_TILES,
    SynthPotsdamResult,
    SynthResult,
    eroded_boundaries,
    synth_potsdam,
    synth_scene,
    write_buildings,
    write_labels,
)

__all__ = [
    "BUILDING",
    "CAR",
    "CLUTTER",
    "DEFAULT_CRS",
    "DEFAULT_ORIGIN",
    "DEFAULT_POTSDAM_TILES",
    "IMPERVIOUS",
    "LOW_VEG",
    "SYNTH_DTYPES",
    "TREE",
    "Building",
    "SceneArrays",
    "SynthPotsdamResult",
    "SynthResult",
    "convert_image",
    "eroded_boundaries",
    "generate_scene",
    "synth_potsdam",
    "synth_scene",
    "write_buildings",
    "write_labels",
]
