"""CPU-only rewrite of the exported graph before ONNX Runtime loads it (the file is not changed).

ONNX Runtime runs a ConvTranspose as one small GEMM per image followed by col2im. A stride-2,
kernel-4, pad-1 transposed convolution is exactly four 2x2 convolutions, one per output phase
(even/odd row x even/odd column), each reading the input with asymmetric padding; their outputs
interleave with DepthToSpace. Those Convs take ONNX Runtime's blocked (NCHWc) convolution path
and fuse the activation that follows, which on the generator's 128->64 layer is about a quarter
faster at the same arithmetic. Layers with few output channels (the final 64->C layer) are
left alone: there the blocked path does not apply and the rewrite is slower.

The model that atc converts is never rewritten: the NPU runs ConvTranspose natively.
"""

from __future__ import annotations

import numpy as np

# For output phase p (0 = even, 1 = odd): the kernel taps it uses, in the order the 2x2 conv
# reads its input rows (row m-1, m for even; m, m+1 for odd), and the conv's (before, after) pad.
PHASE_TAPS = {0: (3, 1), 1: (2, 0)}
PHASE_PADS = {0: (1, 0), 1: (0, 1)}
FUSABLE_ACTIVATIONS = {"Relu", "Tanh", "Sigmoid"}
MIN_OUTPUT_CHANNELS = 16  # NCHWc block size; fewer output channels: keep ConvTranspose


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _splittable(node, inits: dict) -> bool:
    if node.op_type != "ConvTranspose" or len(node.input) < 2 or node.input[1] not in inits:
        return False
    if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
        return False
    a = _attrs(node)
    auto_pad = a.get("auto_pad", b"NOTSET")
    if (list(a.get("kernel_shape", [4, 4])) != [4, 4] or list(a.get("strides", [1, 1])) != [2, 2]
            or list(a.get("pads", [0, 0, 0, 0])) != [1, 1, 1, 1]
            or list(a.get("dilations", [1, 1])) != [1, 1] or a.get("group", 1) != 1
            or any(a.get("output_padding", [0, 0])) or "output_shape" in a
            or auto_pad not in (b"NOTSET", "NOTSET")):
        return False
    weight = inits[node.input[1]]
    return weight.ndim == 4 and weight.shape[2:] == (4, 4) and weight.shape[1] % MIN_OUTPUT_CHANNELS == 0


def phase_weights(weight: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """ConvTranspose weight [Cin, Cout, 4, 4] -> [(py, px, Conv weight [Cout, Cin, 2, 2])] in DCR order."""
    phases = []
    for py in (0, 1):
        for px in (0, 1):
            k = np.empty((weight.shape[1], weight.shape[0], 2, 2), dtype=weight.dtype)
            for a, ky in enumerate(PHASE_TAPS[py]):
                for b, kx in enumerate(PHASE_TAPS[px]):
                    k[:, :, a, b] = weight[:, :, ky, kx].T
            phases.append((py, px, k))
    return phases


def split_conv_transposes(model):
    """A copy of `model` with every splittable ConvTranspose as 4 phase Convs + DepthToSpace.

    Returns (model, number of nodes rewritten)."""
    import onnx
    from onnx import helper, numpy_helper

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 11:  # DepthToSpace's DCR mode attribute
        return model, 0
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}

    new_nodes, new_inits, dropped, rewritten = [], [], set(), 0
    for index, node in enumerate(graph.node):
        if id(node) in dropped:
            continue
        if not _splittable(node, inits):
            new_nodes.append(node)
            continue
        rewritten += 1
        tag = f"phase{index}"
        x, out = node.input[0], node.output[0]
        weight = inits[node.input[1]]
        bias = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        activation = None
        users = consumers.get(out, [])
        if (out not in graph_outputs and len(users) == 1 and users[0].op_type in FUSABLE_ACTIVATIONS
                and len(users[0].input) == 1):
            activation = users[0]
            dropped.add(id(activation))
            out = activation.output[0]
        parts = []
        for py, px, k in phase_weights(weight):
            name = f"{tag}_{py}{px}"
            new_inits.append(numpy_helper.from_array(k, f"{name}_w"))
            inputs = [x, f"{name}_w"]
            if bias is not None:
                new_inits.append(numpy_helper.from_array(bias, f"{name}_b"))
                inputs.append(f"{name}_b")
            (top, bottom), (left, right) = PHASE_PADS[py], PHASE_PADS[px]
            conv_out = f"{name}_conv" if activation else name
            new_nodes.append(helper.make_node("Conv", inputs, [conv_out], name=f"{name}_conv",
                                              kernel_shape=[2, 2], pads=[top, left, bottom, right]))
            if activation:
                new_nodes.append(helper.make_node(activation.op_type, [conv_out], [name],
                                                  name=f"{name}_{activation.op_type.lower()}"))
            parts.append(name)
        new_nodes.append(helper.make_node("Concat", parts, [f"{tag}_phases"], name=f"{tag}_concat", axis=1))
        new_nodes.append(helper.make_node("DepthToSpace", [f"{tag}_phases"], [out], name=f"{tag}_interleave",
                                          blocksize=2, mode="DCR"))
    if not rewritten:
        return model, 0
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    del graph.value_info[:]  # shapes of removed tensors; ONNX Runtime infers its own
    return model, rewritten
