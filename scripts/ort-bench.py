"""The onnxruntime side of `grassroots bench screen`: runs MODEL on random float input of SHAPE
(e.g. 64x3x32x32) with THREADS intra-op threads, ITERATIONS times after a warm-up, and prints
the timings as JSON. Usage: ort-bench.py MODEL SHAPE THREADS ITERATIONS"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

model, shape, threads, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
dims = [int(d) for d in shape.split("x")]
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
data = np.random.default_rng(7).standard_normal(dims).astype(np.float32)
for _ in range(3):
    session.run(None, {name: data})
times = []
for _ in range(iterations):
    start = time.perf_counter()
    session.run(None, {name: data})
    times.append(time.perf_counter() - start)
times.sort()
print(json.dumps({
    "runtime": "onnxruntime " + ort.__version__,
    "seconds": sum(times),
    "p50_ms": times[len(times) // 2] * 1000,
    "runs": iterations,
}))
