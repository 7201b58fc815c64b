"""Unlearning methods: one small file each, one registry.

A method is `run(model, ctx, cfg) -> model`: `model` is the original model (on the device), `ctx` an
unlearn.Context (retain/forget loaders, device, pruning masks, ...), `cfg` the run's flags with the method's
published defaults filled in where the user gave none (see each file's `register(... defaults=...)`).
Callers run a method with `get_method(name).apply(model, ctx, cfg)`, which gives pruned weights zero gradient.
"""
from unlearn.common import METHODS, Context, get_method  # noqa: F401
from unlearn import retrain, ft, ga, ng, rl, salun, l1_sparse  # noqa: F401,E402  (registers the methods)
from unlearn import ft_prune_bi  # noqa: F401,E402  (FT with progressive pruning)
from unlearn import ssd, scrub, boundary, salun_soft, ff, iu, amun, lur, regun  # noqa: F401,E402  (issue 10 methods)
from unlearn import a_amu  # noqa: F401,E402  (issue 13: A-AMU; FT --amu_reg uses its regulariser)
