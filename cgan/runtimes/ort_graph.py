"""CPU-only rewrite of the exported graph before ONNX Runtime loads it (the file is not changed).

ONNX Runtime runs a ConvTranspose as one small GEMM per image followed by col2im. A stride-2,
kernel-4, pad-1 transposed convolution is exactly four 2x2 convolutions, one per output phase
(even/odd row x even/odd column), each reading the input with asymmetric padding; their outputs
interleave with DepthToSpace. Those Convs take ONNX Runtime's blocked (NCHWc) convolution path
and fuse the activation that follows, which on the generator's 128->64 layer is about a quarter
faster at the same arithmetic. Layers with few output channels (the final 64->C layer) are
not split: there the blocked path does not apply and a split is slower.

When such a small layer follows a split one (the generator's 64->C output layer after the
128->64 one), the pair is rewritten together: a 1x1 Conv per phase takes its 64 channels to
the 16*C kernel taps before the interleave (so the phases' small tap maps are concatenated, not
their 64-channel maps: -0.9 ms per call in fp32), and a fixed 3x3 Conv sums the taps into the
four output phases, which a last DepthToSpace interleaves. `per_phase_taps=False` makes one
grouped 1x1 Conv over the concatenated phases instead (what the int8 build quantizes: one
scale for all taps, mean pixel error 0.0041 against 0.0048 per phase).

The model that atc converts is never rewritten: the NPU runs ConvTranspose natively.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

# For output phase p (0 = even, 1 = odd): the kernel taps it uses, in the order the 2x2 conv
# reads its input rows (row m-1, m for even; m, m+1 for odd), and the conv's (before, after) pad.
PHASE_TAPS = {0: (3, 1), 1: (2, 0)}
PHASE_PADS = {0: (1, 0), 1: (0, 1)}
PHASE_OFFSETS = {0: (0, 1), 1: (1, 2)}  # the same rows as positions of a 3x3 window around m
FUSABLE_ACTIVATIONS = {"Relu", "Tanh", "Sigmoid"}
MIN_OUTPUT_CHANNELS = 16  # NCHWc block size; fewer output channels: keep ConvTranspose


def split_pays_off() -> bool:
    """Whether the split graph is the faster one here: on x86-64, where ONNX Runtime's blocked
    convolutions apply (settings' CGAN_ORT_SPLIT_DECONV=auto)."""
    import platform

    return platform.machine().lower() in ("x86_64", "amd64")


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _k4s2p1(node, inits: dict) -> bool:
    """A ConvTranspose with kernel 4, stride 2, pad 1 and constant weights (any channel count)."""
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
    return weight.ndim == 4 and weight.shape[2:] == (4, 4)


def _splittable(node, inits: dict) -> bool:
    return _k4s2p1(node, inits) and inits[node.input[1]].shape[1] % MIN_OUTPUT_CHANNELS == 0


def _bias(node, inits: dict):
    return inits[node.input[2]] if len(node.input) > 2 and node.input[2] else None


def _sole_activation(name: str, consumers: dict, graph_outputs: set):
    """The activation node that alone reads `name`, if it can move before an interleave."""
    users = consumers.get(name, [])
    if (name not in graph_outputs and len(users) == 1 and users[0].op_type in FUSABLE_ACTIVATIONS
            and len(users[0].input) == 1):
        return users[0]
    return None


def tap_weights(weight: np.ndarray, phases: int = 4) -> np.ndarray:
    """Grouped 1x1 Conv weight [phases*16*C, Cin, 1, 1]: each phase's Cin channels -> the 16*C
    kernel taps of a ConvTranspose weight [Cin, C, 4, 4], tap channel (ky*4 + kx)*C + c."""
    cin, c_out = weight.shape[:2]
    taps = weight.transpose(2, 3, 1, 0).reshape(16 * c_out, cin)
    return np.tile(taps, (phases, 1))[:, :, None, None].astype(weight.dtype)


def overlap_add_weights(c_out: int, dtype=np.float32) -> np.ndarray:
    """Fixed 3x3 Conv weight [4*C, 16*C, 3, 3] summing kernel taps into the four output phases
    (out channel (qy*2 + qx)*C + c), the col2im of a stride-2, pad-1, kernel-4 ConvTranspose."""
    k = np.zeros((4 * c_out, 16 * c_out, 3, 3), dtype=dtype)
    for qy in (0, 1):
        for qx in (0, 1):
            for (ky, a) in zip(PHASE_TAPS[qy], PHASE_OFFSETS[qy], strict=True):
                for (kx, b) in zip(PHASE_TAPS[qx], PHASE_OFFSETS[qx], strict=True):
                    for c in range(c_out):
                        k[(qy * 2 + qx) * c_out + c, (ky * 4 + kx) * c_out + c, a, b] = 1
    return k


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


def split_conv_transposes(model: onnx.ModelProto, *, per_phase_taps: bool = True) -> tuple[onnx.ModelProto, int]:
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
        weight, bias = inits[node.input[1]], _bias(node, inits)
        activation = _sole_activation(out, consumers, graph_outputs)
        if activation is not None:
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
        users = consumers.get(out, [])
        follower = users[0] if len(users) == 1 and out not in graph_outputs else None
        if follower is not None and follower.input[0] == out and _k4s2p1(follower, inits) \
                and not _splittable(follower, inits):
            dropped.add(id(follower))
            new_nodes += _pair_tail(follower, parts, tag, inits, consumers, graph_outputs,
                                    new_inits, dropped, per_phase_taps)
            continue
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


def _pair_tail(node, phases: list[str], tag: str, inits: dict, consumers: dict, graph_outputs: set,
               new_inits: list, dropped: set, per_phase_taps: bool = True) -> list:
    """Nodes computing the small ConvTranspose `node` straight from the phase maps of the layer
    before it: taps per phase, interleave the taps, sum them per output phase, interleave."""
    from onnx import helper, numpy_helper

    weight, bias = inits[node.input[1]], _bias(node, inits)
    c_out = weight.shape[1]
    out = node.output[0]
    activation = _sole_activation(out, consumers, graph_outputs)
    if activation is not None:
        dropped.add(id(activation))
        out = activation.output[0]
    new_inits.append(numpy_helper.from_array(tap_weights(weight, 1 if per_phase_taps else 4), f"{tag}_taps_w"))
    new_inits.append(numpy_helper.from_array(overlap_add_weights(c_out, weight.dtype), f"{tag}_sum_w"))
    sum_inputs = [f"{tag}_tapmap", f"{tag}_sum_w"]
    if bias is not None:
        new_inits.append(numpy_helper.from_array(np.tile(bias, 4), f"{tag}_sum_b"))
        sum_inputs.append(f"{tag}_sum_b")
    summed = f"{tag}_sum" if activation else f"{tag}_out_phases"
    if per_phase_taps:  # one 1x1 Conv per phase (shared weight), then concat the small tap maps
        nodes = [helper.make_node("Conv", [p, f"{tag}_taps_w"], [f"{p}_taps"], name=f"{p}_taps", kernel_shape=[1, 1])
                 for p in phases]
        nodes.append(helper.make_node("Concat", [f"{p}_taps" for p in phases], [f"{tag}_taps"],
                                      name=f"{tag}_taps_concat", axis=1))
    else:  # concat the phase maps, one grouped 1x1 Conv
        nodes = [helper.make_node("Concat", phases, [f"{tag}_phases"], name=f"{tag}_concat", axis=1),
                 helper.make_node("Conv", [f"{tag}_phases", f"{tag}_taps_w"], [f"{tag}_taps"], name=f"{tag}_taps",
                                  kernel_shape=[1, 1], group=4)]
    nodes += [
        helper.make_node("DepthToSpace", [f"{tag}_taps"], [f"{tag}_tapmap"], name=f"{tag}_tap_interleave",
                         blocksize=2, mode="DCR"),
        helper.make_node("Conv", sum_inputs, [summed], name=f"{tag}_sum", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    if activation is not None:
        nodes.append(helper.make_node(activation.op_type, [summed], [f"{tag}_out_phases"],
                                      name=f"{tag}_out_{activation.op_type.lower()}"))
    nodes.append(helper.make_node("DepthToSpace", [f"{tag}_out_phases"], [out], name=f"{tag}_out_interleave",
                                  blocksize=2, mode="DCR"))
    return nodes
