"""The layout of an exported ONNX file, shared by its writer (`stforecast.export`) and its reader
(`rundir.onnx_model`): the names of its inputs, output and metadata, and the rollout graph.

The graph is one ONNX `Loop` over the model's recurrent step: the step (exported once from
PyTorch, its state explicit) is the loop body, so the file and the time onnxruntime takes to load
it do not grow with the number of lead times, and the number of leads is an input:

    frames (B, T_in, C, H, W) [, guide (B, T_in - 1 + steps, C, H, W)] [, steps ()]
        -> forecast (B, steps, C, H, W)

`steps` (int64 scalar) is optional: it defaults to the `output_frames` the file was exported
with. Iteration t reads input frame t while observing (t < T_in), then its own last output, as
`SequenceModel.rollout` does; outputs T_in - 1 onwards are the forecast. onnx only, no torch.
"""

from __future__ import annotations

from typing import Any

INPUT_NAME = "frames"
GUIDE_NAME = "guide"  # the second input of a guided model
STEPS_NAME = "steps"  # optional: how many leads (default: the metadata's output_frames)
OUTPUT_NAME = "forecast"
CARD_KEY = "stforecast_model_card"  # metadata: the model card JSON
FORECAST_KEY = "stforecast_forecast"  # metadata: the run's [forecast] section (JSON)
RECIPE_KEY = "stforecast_recipe_sha256"  # metadata: the sha256 of the run's recipe.toml
_PREFIX = "step/"


def loop_graph(step: Any, spec: dict[str, Any], channels: list[int], patch: int) -> Any:
    """The rollout model around `step` (the ONNX model of `export._Step`: inputs `x`, [`g`],
    `s0..`, outputs `y`, `o0..`), for `spec` (`export._spec`); `channels` of each state tensor,
    on the grid `patch` times coarser than the frames."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    t_in, c, h, w = spec["input"]
    guided, n = spec["guided"], len(channels)
    height, width = ("height", "width") if spec["size_free"] else (h, w)
    const = _Constants(helper, numpy_helper, np)
    nodes = [
        helper.make_node("Shape", [INPUT_NAME], ["shape"]),
        helper.make_node("Gather", ["shape", const.vector([0])], ["batch"]),
        helper.make_node("Gather", ["shape", const.vector([3, 4])], ["hw"]),
        helper.make_node("Div", ["hw", const.vector([patch])], ["latent_hw"]),
        helper.make_node("Gather", [INPUT_NAME, const.scalar(0)], ["first"], axis=1),
        helper.make_node("Add", [STEPS_NAME, const.scalar(t_in - 1)], ["trips"]),
    ]
    for i, ch in enumerate(channels):  # the zero state, on the latent grid
        nodes.append(
            helper.make_node(
                "Concat", ["batch", const.vector([ch]), "latent_hw"], [f"zshape{i}"], axis=0
            )
        )
        nodes.append(
            helper.make_node(
                "ConstantOfShape",
                [f"zshape{i}"],
                [f"zero{i}"],
                value=numpy_helper.from_array(np.zeros(1, np.float32)),
            )
        )
    body = _body(step, helper, TensorProto, const, t_in, guided, n)
    states = [f"zero{i}" for i in range(n)]
    nodes.append(
        helper.make_node(
            "Loop",
            ["trips", const.true(), "first", *states],
            ["last", *[f"final{i}" for i in range(n)], "outputs"],
            body=body,
        )
    )
    nodes.append(
        helper.make_node(
            "Slice",
            ["outputs", const.vector([t_in - 1]), const.vector([2**62]), const.vector([0])],
            ["leads"],
        )
    )
    nodes.append(helper.make_node("Transpose", ["leads"], [OUTPUT_NAME], perm=[1, 0, 2, 3, 4]))
    inputs = [
        helper.make_tensor_value_info(
            INPUT_NAME, TensorProto.FLOAT, ["batch", t_in, c, height, width]
        )
    ]
    if guided:
        inputs.append(
            helper.make_tensor_value_info(
                GUIDE_NAME, TensorProto.FLOAT, ["batch", "guide_frames", c, height, width]
            )
        )
    inputs.append(helper.make_tensor_value_info(STEPS_NAME, TensorProto.INT64, []))
    output = helper.make_tensor_value_info(
        OUTPUT_NAME, TensorProto.FLOAT, ["batch", "steps", c, height, width]
    )
    default = numpy_helper.from_array(np.array(spec["output_frames"], np.int64), STEPS_NAME)
    weights = [_renamed_initializer(t) for t in step.graph.initializer]
    graph = helper.make_graph(
        [*const.nodes, *nodes], "stforecast_rollout", inputs, [output], [default, *weights]
    )
    model = helper.make_model(graph, opset_imports=list(step.opset_import))
    model.ir_version = step.ir_version
    model.functions.extend(step.functions)
    return model


class _Constants:
    """Constant nodes of the outer graph (the body reads them from the outer scope)."""

    def __init__(self, helper: Any, numpy_helper: Any, np: Any) -> None:
        self.helper, self.numpy_helper, self.np = helper, numpy_helper, np
        self.nodes: list[Any] = []

    def _add(self, value: Any) -> str:
        name = f"const{len(self.nodes)}"
        tensor = self.numpy_helper.from_array(value, name)
        self.nodes.append(self.helper.make_node("Constant", [], [name], value=tensor))
        return name

    def scalar(self, v: int) -> str:
        return self._add(self.np.array(v, self.np.int64))

    def vector(self, v: list[int]) -> str:
        return self._add(self.np.array(v, self.np.int64))

    def true(self) -> str:
        return self._add(self.np.array(True))


def _body(
    step: Any, helper: Any, TensorProto: Any, const: _Constants, t_in: int, guided: bool, n: int
) -> Any:
    """The loop body: iteration t feeds input frame t (t < T_in) or the last output, and the
    guide of frame t, to the step."""
    last_in = const.scalar(t_in - 1)
    count = const.scalar(t_in)
    nodes = [
        helper.make_node("Min", ["t", last_in], ["t_obs"]),
        helper.make_node("Gather", [INPUT_NAME, "t_obs"], ["observed"], axis=1),
        helper.make_node("Less", ["t", count], ["observing"]),
        helper.make_node("Where", ["observing", "observed", "previous"], ["x"]),
    ]
    feeds = {"x": "x"}
    if guided:
        nodes.append(helper.make_node("Gather", [GUIDE_NAME, "t"], ["g"], axis=1))
        feeds["g"] = "g"
    feeds |= {f"s{i}": f"state{i}" for i in range(n)}
    names = {t.name for t in step.graph.initializer}
    rename = {**feeds, **{name: _PREFIX + name for name in names}}
    for node in step.graph.node:
        if any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute):
            raise ValueError(f"the exported step has a subgraph ({node.op_type})")
        copy = type(node)()
        copy.CopyFrom(node)
        copy.name = _PREFIX + node.name if node.name else ""
        copy.input[:] = [rename.get(v, _PREFIX + v) if v else "" for v in node.input]
        copy.output[:] = [rename.get(v, _PREFIX + v) for v in node.output]
        nodes.append(copy)
    outputs = {o.name: _PREFIX + o.name for o in step.graph.output}
    nodes.append(helper.make_node("Identity", ["cond"], ["cond_out"]))
    nodes.append(helper.make_node("Identity", [outputs["y"]], ["y_out"]))
    nodes.append(helper.make_node("Identity", [outputs["y"]], ["y_scan"]))
    nodes += [helper.make_node("Identity", [outputs[f"o{i}"]], [f"state{i}_out"]) for i in range(n)]
    tensor = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("t", TensorProto.INT64, []),
        helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        helper.make_tensor_value_info("previous", tensor, None),
        *[helper.make_tensor_value_info(f"state{i}", tensor, None) for i in range(n)],
    ]
    outs = [
        helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
        helper.make_tensor_value_info("y_out", tensor, None),
        *[helper.make_tensor_value_info(f"state{i}_out", tensor, None) for i in range(n)],
        helper.make_tensor_value_info("y_scan", tensor, None),
    ]
    return helper.make_graph(nodes, "stforecast_step", inputs, outs)


def _renamed_initializer(tensor: Any) -> Any:
    copy = type(tensor)()
    copy.CopyFrom(tensor)
    copy.name = _PREFIX + tensor.name
    return copy
