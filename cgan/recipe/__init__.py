"""The recipe's steps as functions: the generator, checkpoints, ONNX export, input and output bins,
grids, perf records, and the model store."""
