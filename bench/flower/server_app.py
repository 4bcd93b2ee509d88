"""ServerApp: FedAvg, fixed rounds, initial weights from file, per-round timing log.

Env:
  FL_LOG       path of a JSON-lines file (one line per round, appended)
  FL_EVAL_CMD  optional; command template with {in} {round}; must print accuracy=X
"""
import json
import os
import re
import subprocess
import tempfile
import time

import numpy as np
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


def _log_line(obj: dict) -> None:
    path = os.environ.get("FL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj) + "\n")


class TimedFedAvg(FedAvg):
    """FedAvg that records round start/end and the clients' training seconds."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.round_start = {}

    def configure_train(self, server_round, arrays, config, grid):
        self.round_start[server_round] = time.time()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)  # timestamp after all replies were pulled
        t_replies = time.time()
        clients = []
        for m in replies:
            if m.has_error():
                clients.append({"node": m.metadata.src_node_id, "error": str(m.error)})
                continue
            mr = m.content["metrics"]
            clients.append({
                "node": m.metadata.src_node_id,
                "partition": int(mr["partition-id"]),
                "train_s": float(mr["train-seconds"]),
                "num_examples": int(mr["num-examples"]),
            })
        arrays, metrics = super().aggregate_train(server_round, replies)
        t_end = time.time()
        start = self.round_start[server_round]
        train_s = [c["train_s"] for c in clients if "train_s" in c]
        rec = {
            "round": server_round,
            "start": start,
            "replies_received": t_replies,
            "end": t_end,
            "wall_s": t_end - start,
            "max_client_train_s": max(train_s) if train_s else None,
            "overhead_s": (t_end - start - max(train_s)) if train_s else None,
            "clients": clients,
        }
        print(f"[timing] round {server_round}: wall {rec['wall_s']:.3f}s, "
              f"slowest client train {rec['max_client_train_s']:.3f}s, "
              f"overhead {rec['overhead_s']:.3f}s", flush=True)
        _log_line(rec)
        return arrays, metrics


def _load_initial(cfg) -> list:
    path = str(cfg.get("init-weights", ""))
    if path:
        if path.endswith(".npz"):
            z = np.load(path)
            return [np.ascontiguousarray(z[k], dtype=np.float32) for k in z.files]
        return [np.ascontiguousarray(np.load(path), dtype=np.float32)]
    return [np.zeros(int(cfg["model-size"]), dtype=np.float32)]


def _make_eval_fn():
    cmd = os.environ.get("FL_EVAL_CMD")
    if not cmd:
        return None

    def evaluate(server_round: int, arrays: ArrayRecord):
        nds = arrays.to_numpy_ndarrays()
        with tempfile.TemporaryDirectory() as d:
            inp = os.path.join(d, "global.f32")
            with open(inp, "wb") as f:
                for a in nds:
                    f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
            t0 = time.time()
            out = subprocess.run(cmd.format(**{"in": inp, "round": server_round}),
                                 shell=True, check=True, capture_output=True,
                                 text=True).stdout
            dt = time.time() - t0
        m = re.search(r"accuracy=([0-9.eE+-]+)", out)
        acc = float(m.group(1)) if m else float("nan")
        print(f"[eval] round {server_round}: accuracy={acc} ({dt:.3f}s)", flush=True)
        _log_line({"eval_round": server_round, "accuracy": acc, "eval_s": dt,
                   "t": time.time()})
        return MetricRecord({"accuracy": acc})

    return evaluate


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    n = int(cfg["min-clients"])
    strategy = TimedFedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,  # no client-side evaluation
        min_train_nodes=n,
        min_available_nodes=n,
    )
    initial = ArrayRecord(_load_initial(cfg))
    t0 = time.time()
    result = strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=int(cfg["num-server-rounds"]),
        timeout=float(cfg["round-timeout"]),
        evaluate_fn=_make_eval_fn(),
    )
    total = time.time() - t0
    final = result.evaluate_metrics_serverapp.get(int(cfg["num-server-rounds"]))
    acc = float(final["accuracy"]) if final is not None else None
    print(f"[done] total {total:.3f}s final accuracy={acc}", flush=True)
    _log_line({"done": True, "total_s": total, "final_accuracy": acc, "t": time.time()})
