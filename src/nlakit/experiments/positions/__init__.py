"""`nlakit experiment positions`: explain every token of a span and measure how the explanation (and its
reconstruction) depends on the token position: per token, per token class, per chat region, and drift between
neighbours. See `nlakit.experiments.positions.run`."""
