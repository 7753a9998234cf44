import numpy as np

from aerialct.classes import IGNORE_INDEX, POTSDAM


def test_potsdam_legend_roundtrip_and_unknown_colours():
    ids = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.uint8)
    rgb = POTSDAM.ids_to_rgb(ids)
    back, unknown = POTSDAM.rgb_to_ids(rgb)
    assert np.array_equal(back, ids)
    assert unknown == {}
    rgb[:, 0, 0] = (12, 34, 56)  # not in the legend
    rgb[:, 1, 1] = (0, 0, 0)  # eroded boundary: ignore, not "unknown"
    back, unknown = POTSDAM.rgb_to_ids(rgb)
    assert back[0, 0] == IGNORE_INDEX and back[1, 1] == IGNORE_INDEX
    assert unknown == {(12, 34, 56): 1}


def test_id_of_accepts_names_and_ids():
    assert POTSDAM.id_of("building") == 1
    assert POTSDAM.id_of("Low vegetation") == 2
    assert POTSDAM.id_of(4) == 4
