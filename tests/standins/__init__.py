"""Contract-faithful STAND-INS of atc, msame and npu-smi, for tests only (see README.md)."""
