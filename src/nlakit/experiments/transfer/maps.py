"""The linear maps variant → base, fitted on paired "other text" positions (`positions.paired`): ridge and residual."""

from __future__ import annotations

import torch


def fit_map(x: torch.Tensor, y: torch.Tensor):
    """Ridge x → n(y) (`nlakit.baselines.fit_ridge`: standardised inputs, RidgeCV over alphas); shrinks towards zero."""
    import numpy as np

    from nlakit.baselines import fit_ridge
    from nlakit.metrics import normalize

    model = fit_ridge(x, normalize(y))
    return lambda z: torch.from_numpy(np.asarray(model.predict(z.double().numpy()))).float()


def fit_residual_map(x: torch.Tensor, y: torch.Tensor):
    """n(x) + ridge(n(x) → n(y) − n(x)): strong regularisation leaves the identity plus a mean shift, the right prior
    for a fine-tune whose activations barely moved (a plain ridge shrinks towards zero instead)."""
    import numpy as np

    from nlakit.baselines import fit_ridge
    from nlakit.metrics import normalize

    xn = normalize(x)
    model = fit_ridge(xn, normalize(y) - xn)  # (N, D) residuals at the sqrt(d) scale, not renormalised

    def apply(z: torch.Tensor) -> torch.Tensor:
        zn = normalize(z)
        return zn + torch.from_numpy(np.asarray(model.predict(zn.double().numpy()))).float()

    return apply


MAP_FITTERS = {"ridge": fit_map, "residual": fit_residual_map}
