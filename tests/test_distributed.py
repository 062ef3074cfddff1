"""Training across machines: two torchrun "nodes" on localhost (c10d rendezvous, gloo) give the loss curve of one
process with the same global batch."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from reasonless.train import train

MODEL = dict(n_layer=2, d_model=64, n_head=4, n_kv_head=2, d_ff=128)
TRAIN = ["--preset", "tiny", "--seq-len", "512", "--steps", "3", "--grad-accum", "2", "--eval-every", "3",
         "--eval-batches", "2", "--warmup", "1", "--lr", "3e-3", "--val-fraction", "0.1", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_match_one_process(tmp_path, make_token_dir):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    data = make_token_dir(tmp_path, 48)
    one = train(data, tmp_path / "one", preset="tiny", model_overrides=MODEL, seq_len=512, rows=2, steps=3,
                grad_accum=2, eval_every=3, eval_batches=2, warmup=1, lr=3e-3, val_fraction=0.1, progress=False)
    model = [x for k, v in MODEL.items() for x in ("--model-param", f"{k}={v}")]
    endpoint = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    # Two launches, as on two machines: each starts one process; the c10d rendezvous numbers the nodes.
    cmd = [torchrun, "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint,
           "--rdzv_id", "reasonless-test", "--local_addr", "127.0.0.1", "-m", "reasonless", "train", "--data",
           str(data), *model, "--out", str(tmp_path / "two"), "--rows", "1", *TRAIN]
    nodes = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    try:
        outputs = [node.communicate(timeout=180)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    lines = [json.loads(ln) for ln in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [1, 2, 3]  # global rank 0 alone writes
    assert [ln["loss"] for ln in lines] == pytest.approx(one["losses"], rel=1e-5)
    assert lines[-1]["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["world_size"] == 2 and run["rows"] == 1
