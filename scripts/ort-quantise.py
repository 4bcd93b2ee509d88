"""Quantises an f32 ONNX graph with onnxruntime's own tool, for the tract_quantised example:
static quantisation of the convolutions (int8 weights, per tensor), calibrated on CALIBRATION
runs of standard-normal input of SHAPE (e.g. 1x3x64x64), in both of onnxruntime's formats
(QOperator: QLinearConv; QDQ: QuantizeLinear/DequantizeLinear around Conv) and both activation
types (uint8, int8). Prints the paths written, one a line.
Usage: ort-quantise.py MODEL SHAPE OUT_DIR [CALIBRATION]"""
import pathlib
import sys

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

model, shape, out_dir = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
calibration = int(sys.argv[4]) if len(sys.argv) > 4 else 32
dims = [int(d) for d in shape.split("x")]
name = onnx.load(model).graph.input[0].name


class Draws(CalibrationDataReader):
    def __init__(self):
        rng = np.random.default_rng(1)
        self.inputs = iter([{name: rng.standard_normal(dims).astype(np.float32)} for _ in range(calibration)])

    def get_next(self):
        return next(self.inputs, None)


for form, form_name in [(QuantFormat.QOperator, "qoperator"), (QuantFormat.QDQ, "qdq")]:
    for activations, activations_name in [(QuantType.QUInt8, "u8"), (QuantType.QInt8, "s8")]:
        out = out_dir / f"{form_name}-{activations_name}.onnx"
        quantize_static(
            model,
            str(out),
            Draws(),
            quant_format=form,
            activation_type=activations,
            weight_type=QuantType.QInt8,
            per_channel=False,
            # Only the convolutions: onnxruntime's quantised pooling and Gemm are contrib
            # operators (com.microsoft) that no other runtime reads.
            op_types_to_quantize=["Conv"],
        )
        print(out)
