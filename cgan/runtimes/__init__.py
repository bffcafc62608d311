"""Runtimes that turn a folder of input bins into output bins in msame's layout + a perf record."""
