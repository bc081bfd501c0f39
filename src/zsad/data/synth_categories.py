"""The categories of the synthetic data set (names only, so help texts need no image code)."""

TEXTURE_CATEGORIES = ("stripes", "checker", "carpet", "wood")
OBJECT_CATEGORIES = ("disc", "tile", "ring", "cross")
CATEGORIES = TEXTURE_CATEGORIES + OBJECT_CATEGORIES
# The zero-shot split: train on one group, test on the other.
TRAIN_CATEGORIES = ("stripes", "carpet", "disc", "ring")
TEST_CATEGORIES = ("checker", "wood", "tile", "cross")
