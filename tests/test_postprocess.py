import numpy as np

from maskmatch_med.evaluation.postprocess import keep_largest_component


def test_keeps_the_largest_island_per_class():
    labels = np.zeros((12, 12, 3), np.uint8)
    labels[1:6, 1:6, :] = 3  # the LV
    labels[9:11, 9:11, 1] = 3  # a small false-positive island
    labels[1:6, 7:9, :] = 1  # RV: one component, untouched
    cleaned = keep_largest_component(labels, num_classes=4)
    assert cleaned[9:11, 9:11, 1].max() == 0
    assert (cleaned[1:6, 1:6, :] == 3).all() and (cleaned[1:6, 7:9, :] == 1).all()
    assert labels[9, 9, 1] == 3  # the input is not modified


def test_touching_diagonally_is_not_connected_but_faces_are():
    labels = np.zeros((4, 4, 1), np.uint8)
    labels[0, 0, 0] = labels[1, 1, 0] = labels[1, 2, 0] = 2
    cleaned = keep_largest_component(labels, num_classes=3)
    assert cleaned[0, 0, 0] == 0 and cleaned[1, 1, 0] == 2 and cleaned[1, 2, 0] == 2
