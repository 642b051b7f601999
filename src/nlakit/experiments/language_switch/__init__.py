"""Language switch: does an NLA see that a model will answer in another language before the model's output shows it?

Modules: `dataset` (the seeded generator of cue prompts from the parallel PUD sentences, with its held-out split and
attribution), `detect` (lingua, the explanation lexicon, quoted fragments, lens token sets, smoothing and onsets),
`variant` (the SFT variant, on the shared TRL path), `score` (answer-language accuracy before vs after).
"""
