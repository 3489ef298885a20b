"""Triton python-backend model written by ``tailmark export --triton-repo`` as ``<model>/1/model.py``.

It runs inside Triton's python stub (numpy < 2 there), so it imports nothing from tailmark. The
config.pbtxt parameter ``tailmark_kind`` says what it is: ``identity`` (each output echoes the input of
the same position) or ``onnx`` (``model.onnx`` beside this file, run by ONNX Runtime on the CPU).
With dynamic batching Triton hands ``execute`` several requests; for ``onnx`` they are concatenated
into one run and split back, as tailmark's batcher does.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.kind = config.get("parameters", {}).get("tailmark_kind", {}).get("string_value", "identity")
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        if self.kind == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
            self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        if self.kind == "identity":
            return [self._identity(request) for request in requests]
        arrays = [[pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs] for r in requests]
        sizes = [a[0].shape[0] for a in arrays]
        feed = {name: np.concatenate([a[i] for a in arrays]) for i, name in enumerate(self.inputs)}
        results = self.session.run(self.outputs, feed)
        responses, offset = [], 0
        for size in sizes:
            tensors = [pb_utils.Tensor(n, r[offset : offset + size]) for n, r in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            offset += size
        return responses

    def _identity(self, request):
        tensors = [
            pb_utils.Tensor(out, pb_utils.get_input_tensor_by_name(request, inp).as_numpy())
            for inp, out in zip(self.inputs, self.outputs)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)
