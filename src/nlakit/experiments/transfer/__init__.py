"""The transfer experiment: does an NLA trained on a target transfer to fine-tuned variants of it (SFT, DPO), and do
its explanations show the fine-tune's behaviour (frustration at impossible maths) before the model's output does?

    nlakit experiment transfer --nla runs/nla --base smollm2 --variants runs/variants/sft,runs/variants/dpo --out runs/transfer

For each model (the base, then each variant):

1. Prompts: held-out impossible problems (`behaviour`) and ordinary held-out corpus prompts (GSM8K questions
   and chat turns). The model answers each greedily; the text is ``chat(prompt) + answer``.
2. Positions, from the model's own text: ``prompt`` (seeded tokens inside the user message; the same tokens for every
   model), ``last_prompt`` (the last token before the answer), ``response`` (the first k answer tokens). A response
   token is ``pre`` while the answer so far (through that token) has no frustration-lexicon hit, ``post`` after.
3. Activations at the NLA's layer L, then the base NLA applied
   (a) **directly**: explain the variant's vector, reconstruct, score against it (fve_nrm, cos, 95% bootstrap CI),
       beside the usual baselines (`nlakit.baselines`) computed on the same model;
   (b) **through a linear map** variant → base fitted on n paired positions of *other* texts (the training corpus,
       never the prompts), n swept over ``map_sizes``, for each kind in ``map_kinds``: ``ridge`` (plain ridge,
       regularisation shrinks towards zero) and ``residual`` (ridge on n(h_base) − n(h_variant), shrinking towards
       the identity). The reconstruction lives in base space; it is scored against the mapped vector
       (``space: base``) and, carried back by the same kind of map base → variant fitted on the same pairs, against
       the variant's own vector (``space: variant``, comparable with (a)). ``map_only`` is the round trip without the
       NLA (how much the two maps alone lose).
   fve_nrm is centred on the NLA's own Reference throughout (`nlakit.metrics`).
4. Frustration content of every explanation (`frustration.lexicon_hits`; the classifier is reported too but it
   was fitted on answers, not explanations), per model and position type, and whether it appears at ``pre`` positions.

Writes ``transfer.json`` (results) and ``transfer.html`` (rendered from the JSON only).

Modules: `behaviour` (the dataset, from `problems` and `open_problems`), `frustration` (the scorer), `variants`
(building SFT/DPO variants), `score` (their behaviour score, shared prompts), then the experiment itself:
`config`, `positions`, `maps`, `tables`, `run`. The command is `nlakit.commands.experiment.transfer`.
"""

from nlakit.experiments.transfer.config import DEFAULT_BASELINES, PHASES, POSITION_TYPES, TransferConfig
from nlakit.experiments.transfer.maps import MAP_FITTERS, fit_map, fit_residual_map
from nlakit.experiments.transfer.positions import (
    ModelRun,
    answer_phase,
    chat_prefix,
    load_prompts,
    map_positions,
    map_texts,
    paired,
    pick_positions,
    run_model,
)
from nlakit.experiments.transfer.run import run_transfer

__all__ = ["DEFAULT_BASELINES", "MAP_FITTERS", "PHASES", "POSITION_TYPES", "ModelRun", "TransferConfig", "answer_phase",
           "chat_prefix", "fit_map", "fit_residual_map", "load_prompts", "map_positions", "map_texts", "paired",
           "pick_positions", "run_model", "run_transfer"]
