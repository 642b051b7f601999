"""The symreg experiment: can a small LM find the equation behind a 24-row table, and does its NLA foretell the form?

`tasks` (grammar, generator, prompt) → the target answers → `parse` → `methods` (the baselines and the scorer)
→ `nla` (decode at named prompt positions) → `run` (`SymregConfig`, `run`, `rescore`: the results JSON).
The command is `nlakit.commands.experiment.symreg`; the report template `templates/symreg.html.j2`.
"""
