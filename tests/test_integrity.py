"""Damaged files are never used silently (issue 13): shards and checkpoints are checked against the CRC-32 recorded
when they were written; a corpus whose own traces fail verification is an error; bounds are checked before any
folder is made."""
import json
import shutil

import numpy as np
import pytest

from reasonless import checkpoint as ckpt_io
from reasonless.atomic import crc32_file
from reasonless.cli import main
from reasonless.corpus import Corpus, generate
from reasonless.verifier import percent


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("integrity") / "c"
    generate(out, "wilson", 300, rows=8, cols=8, seed=3, shard_size=100)
    return out


def flip_bit(path, offset_from_end=5):
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_a_shard_is_an_error_naming_the_file(corpus_dir, tmp_path, capsys):
    damaged = tmp_path / "c"
    shutil.copytree(corpus_dir, damaged)
    flip_bit(damaged / "shard-00001" / "walls.npy")
    assert main(["verify", str(damaged)]) == 2
    err = capsys.readouterr().err
    assert "shard-00001/walls.npy: damaged" in err and "examples 100–199" in err
    assert main(["export", str(damaged), "--format", "jsonl", "--out", str(tmp_path / "x.jsonl"), "--quiet"]) == 2
    assert "walls.npy: damaged" in capsys.readouterr().err and not (tmp_path / "x.jsonl").exists()
    # the undamaged original still reads
    assert main(["verify", str(corpus_dir)]) == 0


def test_a_truncated_or_garbled_shard_file_names_the_file_and_what_is_wrong(corpus_dir, tmp_path, capsys):
    damaged = tmp_path / "c"
    shutil.copytree(corpus_dir, damaged)
    ops = damaged / "shard-00002" / "ops.npy"
    ops.write_bytes(ops.read_bytes()[:-7])
    assert main(["verify", str(damaged)]) == 2
    assert "shard-00002/ops.npy: " in (err := capsys.readouterr().err) and "the file is truncated" in err
    plan = damaged / "shard-00000" / "plan.npy"
    plan.write_bytes(b"\x93NUMPX" + plan.read_bytes()[7:])
    assert main(["export", str(damaged), "--format", "jsonl", "--out", str(tmp_path / "x.jsonl"), "--quiet"]) == 2
    assert "shard-00000/plan.npy: not a readable .npy file" in capsys.readouterr().err


def test_resumed_generate_remakes_a_damaged_shard(corpus_dir, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(corpus_dir, copy)
    original = (copy / "shard-00002" / "ops.npy").read_bytes()
    flip_bit(copy / "shard-00002" / "ops.npy")
    (copy / "shard-00000" / "stats.npy").write_bytes((copy / "shard-00000" / "stats.npy").read_bytes()[:100])
    generate(copy, "wilson", 300, rows=8, cols=8, seed=3, shard_size=100)
    assert (copy / "shard-00002" / "ops.npy").read_bytes() == original
    for shard in ("shard-00000", "shard-00001", "shard-00002"):
        for f in (corpus_dir / shard).iterdir():
            assert (copy / shard / f.name).read_bytes() == f.read_bytes(), f


def test_verify_corpus_exits_nonzero_when_its_own_traces_fail(corpus_dir, tmp_path, capsys):
    bad = tmp_path / "c"
    shutil.copytree(corpus_dir, bad)
    # A wrong h in one stored operation, with the checksums updated: the data is consistent but not A*'s.
    ops_path = bad / "shard-00000" / "ops.npy"
    ops = np.load(ops_path)
    ops[3, 2] += 1
    np.save(ops_path, ops)
    digest = crc32_file(ops_path)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["shards"][0]["crc32"]["ops.npy"] = digest
    (bad / "manifest.json").write_text(json.dumps(manifest))
    assert main(["verify", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert "299 / 300" in out and "1 of 300 examples failed" in err
    assert "100.00" not in out.split("trace valid")[1].splitlines()[0]


def test_verify_jsonl_exit_status_only_with_fail_on_invalid(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"text": "query start 0 0 goal 1 0 reasoning close 0 0 c0 c1 solution plan 0 0 "
                                        "plan 3 0 end", "rows": 4, "cols": 4}) + "\n")
    assert main(["verify", str(path), "--mode", "paper"]) == 0
    assert main(["verify", str(path), "--mode", "paper", "--fail-on-invalid"]) == 1


def test_percent_never_rounds_to_a_bound_it_did_not_reach():
    assert percent(19_999, 20_000) == "99.99"
    assert percent(999_999, 1_000_000) == "99.99"
    assert percent(1, 1_000_000) == "0.01"
    assert percent(20_000, 20_000) == "100.00" and percent(0, 5) == "0.00" and percent(1, 2) == "50.00"


def test_checkpoint_damage_is_found_on_load(tmp_path):
    import torch

    model = torch.nn.Linear(4, 3)
    ckpt = ckpt_io.save_checkpoint(tmp_path / "run", 7, model, {"vocab_size": 5}, None, {"data": {}})
    assert json.loads((ckpt / ckpt_io.CHECKSUMS).read_text())["model.safetensors"]
    ckpt_io.load_checkpoint(ckpt, torch.nn.Linear(4, 3))
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    for k in range(16):
        data[-1 - k] ^= 0xFF
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors: damaged"):
        ckpt_io.load_checkpoint(ckpt, torch.nn.Linear(4, 3))
    other = ckpt_io.save_checkpoint(tmp_path / "run", 8, model, {"vocab_size": 5}, None, {"data": {}})
    (other / "trainer.json").unlink()
    with pytest.raises(ValueError, match=r"trainer\.json: missing"):
        ckpt_io.check_checkpoint(other)


def test_generate_bounds_are_checked_before_any_folder_is_made(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["generate", "--generator", "wilson", "--count", str(10**21), "--out", str(out), "--quiet"]) == 2
    assert "at most 1,099,511,627,776" in capsys.readouterr().err and not out.exists()
    assert main(["generate", "--generator", "wilson", "--count", "5", "--seed", str(2**64), "--out", str(out),
                 "--quiet"]) == 2
    assert "seed" in capsys.readouterr().err and not out.exists()


def test_non_utf8_input_is_an_error_naming_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'\n{"text": "query \xff\xfe"}\n')
    assert main(["import", str(bad), "--out", str(tmp_path / "imp"), "--quiet"]) == 2
    assert f"{bad}:2: not UTF-8 text (byte 0xff" in capsys.readouterr().err
    study = tmp_path / "s.toml"
    study.write_bytes(b'[study]\nname = "\xff"\n')
    assert main(["dataset", "build", str(study), "--out", str(tmp_path / "d"), "--quiet"]) == 2
    assert f"{study}: not UTF-8 text" in capsys.readouterr().err
    ev = tmp_path / "e.jsonl"
    ev.write_bytes(b"\xff\n")
    assert main(["report", str(ev), "--out", str(tmp_path / "r")]) == 2
    assert f"{ev}:1: not UTF-8 text" in capsys.readouterr().err
    ev.write_bytes('{"suite": "wilson"}'.encode("utf-16-le") + b"\n")  # json.loads(bytes) would take it for UTF-16
    assert main(["report", str(ev), "--out", str(tmp_path / "r")]) == 2
    assert f"{ev}:1: not valid JSON" in capsys.readouterr().err


def test_leftovers_of_a_killed_export_are_removed_by_the_next_run(corpus_dir, tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    out = tmp_path / "x.jsonl"
    stale_file = tmp_path / f"x.jsonl.tmp-{pid}"
    stale_file.write_bytes(b"half written")
    tokens = tmp_path / "tok"
    (tmp_path / f"tok.tmp-{pid}").mkdir()
    (tmp_path / f"tok.tmp-{pid}" / "tokens.npy").write_bytes(b"x" * 1000)
    alive = tmp_path / f"x.jsonl.tmp-{1}"  # pid 1 is alive: another writer's file is never touched
    alive.write_bytes(b"busy")
    assert main(["export", str(corpus_dir), "--format", "jsonl", "--out", str(out), "--quiet"]) == 0
    assert main(["export", str(corpus_dir), "--format", "tokens", "--out", str(tokens), "--quiet"]) == 0
    assert out.is_file() and (tokens / "meta.json").is_file()
    assert not stale_file.exists() and not (tmp_path / f"tok.tmp-{pid}").exists() and alive.exists()


def test_a_full_disk_names_the_output_and_keeps_the_old_version(tmp_path, monkeypatch, capsys):
    import errno

    from reasonless import atomic

    target = tmp_path / "x.json"
    target.write_text("old")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"x\.json: No space left on device .*previous version is unchanged"):
        with atomic.atomic_file(target, "w") as f:
            f.write("new")
            full()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]
    # NumPy's own wording for a short write is recognised too
    with pytest.raises(OSError, match=r"shard: No space left on device .*nothing was written"):
        with atomic.atomic_dir(tmp_path / "shard"):
            raise OSError("363228 requested and 288704 written")
    assert not (tmp_path / "shard").exists()


def test_per_example_into_a_missing_folder_names_it(corpus_dir, tmp_path, capsys):
    assert main(["verify", str(corpus_dir), "--per-example", str(tmp_path / "no" / "v.jsonl")]) == 2
    assert f"the folder {tmp_path / 'no'} does not exist" in capsys.readouterr().err


def test_train_refuses_an_out_folder_inside_data_and_builds_a_corpus_arm(corpus_dir, tmp_path, capsys):
    corpus = tmp_path / "c"
    shutil.copytree(corpus_dir, corpus)
    before = sorted(p.name for p in (corpus / "shard-00001").iterdir())
    args = ["train", "--data", str(corpus), "--preset", "tiny", "--steps", "2", "--seq-len", "512", "--quiet"]
    assert main(args + ["--out", str(corpus / "shard-00001" / "run")]) == 2
    err = capsys.readouterr().err
    assert f"is inside {corpus / 'shard-00001'}, which is a corpus shard" in err
    assert sorted(p.name for p in (corpus / "shard-00001").iterdir()) == before
    # --data CORPUS: the arm's token streams are exported into the corpus once, then trained on
    assert main(args + ["--arm", "none", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert f"wrote arm 'none' (arm seed 0) to {corpus / 'arms' / 'none'}: 300 sequences" in err
    assert json.loads((corpus / "arms" / "none" / "meta.json").read_text())["arm"] == "none"
    assert (tmp_path / "run" / "metrics.jsonl").is_file()


@pytest.mark.parametrize("argv", [["verify", "X", "--threads", "-3"], ["export", "X", "--format", "jsonl", "--out",
                                                                       "y.jsonl", "--threads", "two"]])
def test_thread_counts_must_be_whole_and_not_negative(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "--threads" in capsys.readouterr().err


def test_export_into_a_missing_folder_creates_nothing(corpus_dir, tmp_path, capsys):
    out = tmp_path / "nonexistent" / "x.jsonl"
    assert main(["export", str(corpus_dir), "--format", "jsonl", "--out", str(out), "--quiet"]) == 2
    assert f"the folder {out.parent} does not exist" in capsys.readouterr().err
    assert not out.parent.exists()


@pytest.mark.parametrize("n", [0, 7, (1 << 23) * 4 - 1, (1 << 23) * 5 + 12_345])
def test_parallel_crc32_equals_zlib(n):
    import zlib

    from reasonless.atomic import crc32_combine, crc32_parallel

    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    assert crc32_parallel(data, threads=3) == zlib.crc32(data)
    a, b = data[: n // 3], data[n // 3:]
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(data)


def test_content_errors_name_the_shard_and_the_corpus_index(corpus_dir, tmp_path, capsys):
    # A cost outside the vocabulary in a file whose checksum is right (a buggy writer, not a damaged disk): the
    # C++ loops find it; the message must give the shard and the corpus index, not the index within the batch.
    from reasonless.atomic import save_npy

    bad = tmp_path / "c"
    shutil.copytree(corpus_dir, bad)
    shard = bad / "shard-00002"
    ops, offsets = np.load(shard / "ops.npy"), np.load(shard / "ops_offsets.npy")
    ops[offsets[5] + 1, 1] = 64  # example 205 of the corpus, its second op: g = 64 on an 8x8 grid
    old_crc = json.loads((shard / "shard.json").read_text())["crc32"]["ops.npy"]
    crc = save_npy(shard / "ops.npy", ops)
    for path in (shard / "shard.json", bad / "manifest.json"):
        path.write_text(path.read_text().replace(old_crc, crc))
    for argv in (["verify", str(bad)], ["export", str(bad), "--format", "tokens", "--out", str(tmp_path / "t"),
                                        "--quiet"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{shard}: example 205 (corpus index): op 1 " in err and "costs must be below rows*cols = 64" in err
