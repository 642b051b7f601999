"""What NLA monitoring would cost in deployment: a roofline estimate, with every assumption written down.

    nlakit cost --out runs/cost                              # 7B, 70B, ~1T MoE under every policy
    nlakit cost --model 70b --explanation-len 500 --decode-efficiency 0.5

Built on one primitive, the batched forward call of `nlakit.experiments.cost.roofline` (FLOPs, bytes,
GPU-seconds = max(compute, bandwidth)/efficiency + overhead). On top of it:

* Decode of L tokens after a p-token prompt = L calls with n_new = 1 at the mean context p + (L−1)/2
  (exact for either roofline term alone, since both are linear in the context).
* The AV prefills its prompt (av_prompt_len tokens, the injected vector is one of them) and decodes
  explanation_len tokens. The AR prefills explanation + template through its first K+1 of N layers,
  i.e. (K+1)/N of the target's parameters (its d×d head, <0.1% of the FLOPs, is ignored).
* Serving one generated token of the target = one decode call at the serving batch and context. The
  same formulas price the monitor and the serving, so their ratio is apples to apples.
* A monitoring policy only counts the activations it explains per day; cost scales linearly with it.

Library code: no printing. `nlakit.commands.cost` prints the table and writes cost.json + cost.html.
Modules: `roofline` (the forward-call model, models, GPUs, calibration), `policies`, `config` (`CostConfig`),
`costing` (`estimate`, `run`); this package re-exports their public names.
"""

from nlakit.experiments.cost.config import CostConfig
from nlakit.experiments.cost.costing import (
    FORMULAS,
    GLOSSARY,
    OVERHEADS,
    SCHEMA_VERSION,
    break_even,
    compute_bound_from_batch,
    efficiency_caveat,
    estimate,
    monitor_phases,
    run,
    serving_phase,
)
from nlakit.experiments.cost.policies import BeforeAction, EveryKth, EveryToken, RandomPerTranscript, SampledTraffic
from nlakit.experiments.cost.roofline import (
    ALIASES,
    FEASIBILITY_BENCH,
    HARDWARE,
    MODELS,
    SCENARIOS,
    Efficiency,
    Hardware,
    ModelSpec,
    Phase,
    calibrate,
    PUBLISHED_EFFICIENCY,
    default_efficiency,
    forward_bytes,
    forward_flops,
    gpus_needed,
    load_calibration,
    measured_efficiency,
    resolve_hardware,
    resolve_model,
)

__all__ = ["ALIASES", "FEASIBILITY_BENCH", "FORMULAS", "GLOSSARY", "HARDWARE", "MODELS", "OVERHEADS", "SCENARIOS",
           "SCHEMA_VERSION", "BeforeAction", "CostConfig", "Efficiency", "EveryKth", "EveryToken", "Hardware", "ModelSpec",
           "Phase", "RandomPerTranscript", "SampledTraffic", "break_even", "calibrate", "compute_bound_from_batch",
           "default_efficiency", "efficiency_caveat", "estimate", "forward_bytes", "forward_flops", "gpus_needed",
           "load_calibration", "measured_efficiency", "monitor_phases", "PUBLISHED_EFFICIENCY", "resolve_hardware", "resolve_model", "run", "serving_phase"]
