"""Values every layer shares, on the ground floor: this module imports nothing.

The attack layer may import only this module and :mod:`ddcat.errors` from the ground floor (it must
stay usable without the run configuration), so the attack budget's defaults live here and
:data:`ddcat.config.DEFAULTS` refers to them.
"""

#: The label of pixels that count nowhere (VOC's void outline, Cityscapes' ignored classes).
IGNORE_INDEX = 255

#: The default L-inf radius and step size of an attack, on images in [0, 1] (the paper's 0.03 / 0.01).
EPS = 0.03
ALPHA = 0.01
