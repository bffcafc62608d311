"""Training code for the demo generator and the quality classifier (not used at run time)."""
