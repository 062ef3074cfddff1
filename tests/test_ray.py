"""`--engine ray`: corpora made by Ray tasks on a local Ray instance (one, shared by the module)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import reasonless
from reasonless.cli import main
from reasonless.engine_ray import TaskFailed, run_tasks

SMALL = dict(generator="wilson", count=6_000, rows=16, cols=16, seed=7, shard_size=1_000)


@pytest.fixture(scope="module")
def local_ray():
    # One instance for the whole module: starting Ray costs seconds on two cores.
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reasonless.generate(tmp_path_factory.mktemp("ref") / "c", threads=1, **SMALL)


def _argv(out, generator, count, rows, cols, seed, shard_size):
    return ["generate", "--generator", generator, "--count", str(count), "--rows", str(rows), "--cols", str(cols),
            "--seed", str(seed), "--shard-size", str(shard_size), "--out", str(out)]


def assert_identical(a: Path, b: Path) -> None:
    """Same shard files byte for byte, same manifest but for the command line and the time written."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files_a:
        if rel.name != "manifest.json":
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    for m in (ma, mb):
        del m["command"], m["written"]
    assert ma == mb


def test_ray_corpus_is_byte_identical_and_progress_counts_tasks(local_ray, reference, tmp_path, capsys):
    out = tmp_path / "c"
    assert main(_argv(out, **SMALL) + ["--engine", "ray", "--tasks", "2"]) == 0
    assert_identical(out, reference.path)
    err = capsys.readouterr().err
    bar = [ln for ln in err.splitlines() if ln.startswith("[")]
    assert len(bar) == 6 and "6,000/6,000 examples" in bar[-1]  # one line per finished task (not a terminal)
    assert "--engine ray" in json.loads((out / "manifest.json").read_text())["command"]


def test_resume_keeps_finished_shards_and_remakes_damaged_ones(local_ray, reference, tmp_path):
    out = tmp_path / "c"
    assert reasonless.generate(out, threads=1, shard="0/2", **SMALL) is None  # a driver that died half-way
    kept = {p: p.stat().st_mtime_ns for p in (out / "shard-00000").iterdir()}
    damaged = out / "shard-00001" / "ops.npy"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 1
    damaged.write_bytes(data)
    (out / "shard-00004.tmp-999999999").mkdir()  # leftover of a task that was killed while writing
    assert main(_argv(out, **SMALL) + ["--engine", "ray", "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "shard-00000").iterdir()} == kept
    assert_identical(out, reference.path)


def _ancestors(pid: int) -> set[int]:
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return seen


def _kill_first_shard_task(stop: threading.Event, killed: list) -> None:
    """SIGKILLs the first worker of this process's Ray instance seen running a shard task."""
    me = os.getpid()
    while not stop.is_set() and not killed:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                title = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::_shard_task") and me in _ancestors(int(name)):
                os.kill(int(name), signal.SIGKILL)
                killed.append(int(name))
                return
        time.sleep(0.002)


def test_worker_killed_mid_task_still_gives_the_same_corpus(local_ray, tmp_path):
    params = dict(generator="wilson", count=12_000, rows=30, cols=30, seed=3, shard_size=1_500)
    reference = reasonless.generate(tmp_path / "ref", threads=1, **params)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_shard_task, args=(stop, killed))
    killer.start()
    try:
        assert main(_argv(tmp_path / "c", **params) + ["--engine", "ray", "--quiet"]) == 0
    finally:
        stop.set()
        killer.join()
    assert killed, "no shard task was seen running"
    assert_identical(tmp_path / "c", reference.path)
    assert not [p for p in (tmp_path / "c").iterdir() if ".tmp-" in p.name]


def test_driver_killed_then_rerun_gives_the_same_corpus(tmp_path):
    # A fresh command starts its own Ray instance and makes shards from the front itself while Ray's tasks take
    # them from the back. Killed (kill -9) once a shard is on disk, then run again, it keeps the finished shards
    # (checksums) and makes the rest.
    params = dict(generator="wilson", count=200_000, rows=30, cols=30, seed=5, shard_size=10_000)
    reference = reasonless.generate(tmp_path / "ref", threads=1, **params)
    out = tmp_path / "c"
    command = [sys.executable, "-m", "reasonless", *_argv(out, **params), "--engine", "ray"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Outside the repository, where our kernels/ folder would shadow Hugging Face's package of that name.
    driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    complete = lambda: [p for p in out.glob("shard-*") if ".tmp-" not in p.name]  # noqa: E731
    while not complete() and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    driver.kill()
    driver.wait()
    kept = {p.name: (p / "walls.npy").stat().st_mtime_ns for p in complete()}
    assert kept and not (out / "manifest.json").exists(), "the driver was not killed part-way"
    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert_identical(out, reference.path)
    assert all((out / name / "walls.npy").stat().st_mtime_ns == t for name, t in kept.items())  # kept, not remade
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_parts_refused_by_claim_are_skipped(local_ray):
    asked = []

    def claim(i):
        asked.append(i)
        return i % 2 == 0

    square = ray.remote(lambda x: x * x)
    assert run_tasks(square, [(f"part {i}", (i,), 1) for i in range(5)], tasks=2, claim=claim) == [0, None, 4, None, 16]
    assert asked == [0, 1, 2, 3, 4]


def test_in_flight_bound_and_a_failing_part_is_named(local_ray, tmp_path):
    def exclusive(marker: str, index: int) -> int:  # local, so that Ray ships it by value to the workers
        import os
        import time

        fd = os.open(marker, os.O_CREAT | os.O_EXCL)  # fails if another task is running at the same time
        time.sleep(0.05)
        os.close(fd)
        os.unlink(marker)
        if index == 2:
            raise ValueError(f"boom at {index}")
        return index

    fn = ray.remote(max_retries=0)(exclusive)
    marker = str(tmp_path / "running")
    assert run_tasks(fn, [(f"part {i}", (marker, i), 1) for i in (0, 1, 3, 4)], tasks=1) == [0, 1, 3, 4]
    with pytest.raises(TaskFailed, match=r"shard 2 \(examples 2–2\) failed for good .*ValueError: boom at 2"):
        run_tasks(fn, [(f"shard {i} (examples {i}–{i})", (marker, i), 1) for i in range(4)], tasks=1)


def test_verify_by_shard_tasks_equals_local_and_names_a_damaged_shard(local_ray, reference, tmp_path, capsys):
    assert main(["verify", str(reference.path), "--per-example", str(tmp_path / "local.jsonl"), "--json"]) == 0
    local = capsys.readouterr().out
    assert main(["verify", str(reference.path), "--per-example", str(tmp_path / "ray.jsonl"), "--json",
                 "--engine", "ray"]) == 0
    assert capsys.readouterr().out == local
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    damaged = tmp_path / "damaged"
    reasonless.merge([reference.path], damaged)
    target = damaged / "shard-00003" / "plan.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.unlink()  # merge hard-links: write a new file, leave the reference intact
    target.write_bytes(data)
    assert main(["verify", str(damaged), "--engine", "ray"]) == 2
    assert "shard 3 (examples 3,000–3,999) failed for good" in capsys.readouterr().err


def test_parquet_parts_by_shard_tasks_equal_the_single_file(local_ray, reference, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from reasonless.parquet import export_parquet

    export_parquet(reference, tmp_path / "one.parquet", arm="swapped", seed=4)
    out = tmp_path / "parts"
    assert main(["export", str(reference.path), "--format", "parquet", "--arm", "swapped", "--arm-seed", "4",
                 "--out", str(out), "--engine", "ray", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["_parquet.json"] + [f"part-{k:05d}.parquet" for k in range(6)]
    assert pq.read_table(out).equals(pq.read_table(tmp_path / "one.parquet"))  # a directory reads as one dataset
    kept = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix == ".parquet"}
    (out / "part-00002.parquet").unlink()
    assert main(["export", str(reference.path), "--format", "parquet", "--arm", "swapped", "--arm-seed", "4",
                 "--out", str(out), "--engine", "ray", "--quiet"]) == 0
    again = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix == ".parquet"}
    assert {k: v for k, v in again.items() if k != "part-00002.parquet"} == \
        {k: v for k, v in kept.items() if k != "part-00002.parquet"}
    assert pq.read_table(out).equals(pq.read_table(tmp_path / "one.parquet"))


@pytest.mark.parametrize("fmt", ["jsonl", "tokens"])
def test_jsonl_and_tokens_by_shard_tasks_are_byte_identical(local_ray, reference, tmp_path, fmt):
    args = ["export", str(reference.path), "--format", fmt, "--arm", "swapped", "--arm-seed", "4", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "local")]) == 0
    assert main(args + ["--out", str(tmp_path / "ray"), "--engine", "ray"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local", "ray"]  # the parts are gone
    if fmt == "jsonl":
        assert (tmp_path / "ray").read_bytes() == (tmp_path / "local").read_bytes()
    else:
        for name in ("tokens.npy", "offsets.npy", "prompt_lengths.npy", "meta.json"):
            assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name


def test_eval_by_suite_tasks_equals_the_local_eval(local_ray, tmp_path):
    from reasonless.interchange import export_tokens
    from reasonless.train import train

    suites = tmp_path / "suites"
    for name, gen in (("a", "wilson"), ("b", "dfs")):
        reasonless.generate(suites / name, gen, 5, rows=5, cols=5, seed=1)
    export_tokens(reasonless.Corpus(suites / "a"), tmp_path / "tok")
    train(tmp_path / "tok", tmp_path / "run", preset="tiny", steps=2, seq_len=256, rows=1, warmup=1,
          model_overrides=dict(n_layer=1, d_model=32, n_head=2, n_kv_head=1, d_ff=64, max_seq_len=256),
          val_fraction=0.0, progress=False, device="cpu")
    args = ["eval", str(tmp_path / "run"), "--suites", str(suites), "--device", "cpu", "--budget", "24", "--quiet",
            "--checkpoint", "latest"]
    assert main(args + ["--out", str(tmp_path / "local.jsonl")]) == 0
    assert main(args + ["--out", str(tmp_path / "ray.jsonl"), "--engine", "ray"]) == 0
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    local, by_ray = (json.loads((tmp_path / f"{n}.jsonl.summary.json").read_text()) for n in ("local", "ray"))
    assert by_ray["meta"].pop("command") != local["meta"].pop("command")
    assert (by_ray["meta"].pop("jsonl"), local["meta"].pop("jsonl")) == ("ray.jsonl", "local.jsonl")
    assert by_ray == local and list(by_ray["suites"]) == ["a", "b"]
    assert not (tmp_path / "ray.jsonl.ray").exists()
