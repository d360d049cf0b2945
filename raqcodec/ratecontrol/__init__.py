"""Rate control: the closest file that fits a ``bpp`` budget. ``search.fit_budget`` is the whole search over
a ``search.BudgetSession``; ``sizes`` finds the largest nearest-neighbour codebook that fits, ``search``
refines along each probed size, ``residual`` weighs the residual stage's levels and groups (model v2).
"""
