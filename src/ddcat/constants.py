"""Values every layer shares, on the ground floor: this module imports nothing.

The attack layer may import only this module, :mod:`ddcat.errors` and :mod:`ddcat.metrics` from the
ground floor (it must stay usable without the run configuration), so the attack budget's defaults
and the evaluation's defaults live here, once: :data:`ddcat.config.DEFAULTS`, the attacks' dataclass
defaults, the command line, experiment files and the reports refer to them.
"""

#: The label of pixels that count nowhere (VOC's void outline, Cityscapes' ignored classes).
IGNORE_INDEX = 255

#: The default L-inf radius and step size of an attack, on images in [0, 1] (the paper's 0.03 / 0.01).
EPS = 0.03
ALPHA = 0.01

#: FGSM with a random start (Wong et al. 2020, Sec. 4): alpha = 1.25 eps, the published setting.
FGSM_RS_STEP = 1.25

#: The paper's white-box sweep: BIM with 1..7 steps (Tables 1, 2, 5; Fig. 4).
SWEEP_STEPS = (1, 2, 3, 4, 5, 6, 7)

#: The iteration budget of the iteration attacks (APGD, each SEA member, each ensemble member):
#: SEA's 300 (Croce, Singh & Hein 2024).
ITERS = 300
