"""STAND-IN of Huawei's ais_bench package (tests only): see ../aclruntime.py. No NPU runs."""
