"""`nlakit experiment infogain`: do NLA explanations carry information about what the model does later beyond what
its output so far shows? Cross-validated probes on output text, explanations, both, and the raw activation.
See `nlakit.experiments.infogain.run`."""
