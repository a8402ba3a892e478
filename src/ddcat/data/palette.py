"""The PASCAL VOC colour map: the palette of VOC's label PNGs and of ddcat's qualitative figures."""

from __future__ import annotations

import numpy as np


def voc_colormap(num: int = 256) -> np.ndarray:
    """``num x 3`` uint8 colours: entry i spreads the bits of i over the high bits of r, g, b
    (bit 0 -> r, bit 1 -> g, bit 2 -> b, from bit 7 down), as VOC's devkit ``labelcolormap``."""
    cmap = np.zeros((num, 3), dtype=np.uint8)
    for i in range(num):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap
