"""Side check for docs/experiments/language_switch.md: what does the NLA say at the last prompt token (the newline after
`assistant`), for the base model and for the language-switch variant, on every held-out prompt?

    OMP_NUM_THREADS=1 python docs/experiments/language_switch/header_check.py runs/ls-cpu/language-switch \
        docs/experiments/language_switch/header_check.json [NLA_DIR]      # NLA_DIR: default = the bundled NLA
"""

import sys

import torch

from nlakit.bundle import load_nla
from nlakit.experiments.common import chat_prefix
from nlakit.experiments.language_switch.dataset import CONTROL, LANGUAGES, load_dataset
from nlakit.experiments.language_switch.detect import Identifier, explanation_hits
from nlakit.io import write_json
from nlakit.metrics import summarize
from nlakit.targets import load_target

torch.set_num_threads(1)
variant_dir, out = sys.argv[1], sys.argv[2]
nla_spec = sys.argv[3] if len(sys.argv) > 3 else "default"
base = load_target("smollm2")
nla = load_nla(nla_spec, target=base)
ident = Identifier((CONTROL, *LANGUAGES))
held = load_dataset(split="heldout")
results = {"variant": variant_dir, "nla": nla_spec, "n": len(held), "models": {}}
for name, model in (("base", base), ("variant", load_target(variant_dir))):
    rows = []
    for e in held:
        ids = model.tokenizer(chat_prefix(model, e.prompt), add_special_tokens=True, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            h = model.model(input_ids=ids, output_hidden_states=True).hidden_states[nla.layer + 1][0, -1]
        rows.append((e, h))
    expl = nla.explain(torch.stack([h for _, h in rows]).float(), max_new_tokens=120, batch_size=64)
    per = {}
    for lang in (*LANGUAGES, CONTROL):
        hits = [explanation_hits(x.text, ident, LANGUAGES) for (e, _), x in zip(rows, expl) if e.lang == lang]
        per[lang] = {"n": len(hits),
                     "names_any_language": summarize([float(bool(h["lexicon"])) for h in hits]),
                     "names_this_language": summarize([float(lang in h["lexicon"]) for h in hits]) if lang != CONTROL else None,
                     "names_french": summarize([float("fr" in h["lexicon"]) for h in hits])}
    results["models"][name] = {"per_language": per, "examples": [{"lang": e.lang, "explanation": x.text} for (e, _), x in
                                                                 list(zip(rows, expl))[::24]]}
    print(name, {k: (v["names_any_language"]["mean"], v["names_this_language"]["mean"] if v["names_this_language"] else None)
                 for k, v in per.items()})
write_json(out, results)
