"""ClientApp: delegates local training to an external command.

Env FL_TRAIN_CMD: template with {partition} {round} {in} {out}; the command reads
raw little-endian float32 (all arrays concatenated) from {in}, writes the same
number of float32 values to {out}, and prints samples=N on stdout.
"""
import os
import re
import subprocess
import tempfile
import time

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    nds = msg.content["arrays"].to_numpy_ndarrays()
    server_round = int(msg.content["config"]["server-round"])
    partition = int(context.node_config.get("partition-id", 0))
    cmd = os.environ["FL_TRAIN_CMD"]
    with tempfile.TemporaryDirectory(prefix="flwr-fit-") as d:
        inp, out = os.path.join(d, "in.f32"), os.path.join(d, "out.f32")
        with open(inp, "wb") as f:
            for a in nds:
                f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd.format(partition=partition, round=server_round, **{"in": inp, "out": out}),
            shell=True, capture_output=True, text=True)
        train_s = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"FL_TRAIN_CMD failed ({proc.returncode}): {proc.stderr[-2000:]}")
        m = re.search(r"samples=(\d+)", proc.stdout)
        if not m:
            raise RuntimeError(f"FL_TRAIN_CMD printed no samples=N: {proc.stdout[-2000:]}")
        flat = np.fromfile(out, dtype="<f4")
    expected = sum(a.size for a in nds)
    if flat.size != expected:
        raise RuntimeError(f"trainer wrote {flat.size} floats, expected {expected}")
    new, off = [], 0
    for a in nds:
        new.append(flat[off:off + a.size].reshape(a.shape).astype(np.float32, copy=False))
        off += a.size
    content = RecordDict({
        "arrays": ArrayRecord(new),
        "metrics": MetricRecord({
            "num-examples": int(m.group(1)),
            "train-seconds": train_s,
            "partition-id": partition,
        }),
    })
    return Message(content=content, reply_to=msg)
