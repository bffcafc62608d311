"""Quality: the digit classifier, the quality report (parity, label accuracy) and the quality gate."""
