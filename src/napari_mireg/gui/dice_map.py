"""The Dice map: the fixed labels filled by their Dice, so that the poorly aligned regions
show at a glance.

The layer shares the fixed labels' data (no copy): only its colormap is new, one colour per
label from a diverging scale, red for a poor overlap (Dice 0.5 or less) through pale yellow
(0.75) to blue for a perfect one (1); red-blue rather than red-green, which colour-blind
users cannot tell apart. The scale starts at 0.5, not 0: Dice of brain structures after a
deformable registration lie between about 0.5 and 0.95, and a scale from 0 would draw them
all in nearly the same blue. No Qt here.
"""

import numpy as np
from matplotlib import colormaps

DICE_COLORMAP = "RdYlBu"
DICE_RANGE = (0.5, 1.0)  # Dice at the red and at the blue end of the scale
# The scale in words (the Dice map button's tooltip; the panel's colour bar draws it).
DICE_LEGEND = "Dice map\nred: 0.5 or less\nyellow: 0.75\nblue: 1"


def dice_colour(value):
    """RGBA (0-1) of a Dice value on the map's scale."""
    low, high = DICE_RANGE
    position = float(np.clip((value - low) / (high - low), 0.0, 1.0))
    return tuple(float(c) for c in colormaps[DICE_COLORMAP](position))


def dice_colormap(dice):
    """A napari Labels colormap filling each label by its Dice (labels with none are clear).

    Parameters
    ----------
    dice : dict of int to float
    """
    colours = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for label, value in dice.items():
        if int(label) != 0:
            colours[int(label)] = dice_colour(value)
    return colours
