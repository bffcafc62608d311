"""Layout: every "what is where" contract: tensor bytes of the bins, workspace keys, published keys."""
