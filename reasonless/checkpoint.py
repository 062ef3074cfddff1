"""Training checkpoints: safetensors tensors + JSON, written atomically, read without unpickling.

A checkpoint is a directory ``RUN/checkpoints/step-000100/`` holding

* ``model.safetensors`` — the model's state_dict (tied embedding once), loadable by any safetensors reader;
* ``config.json`` — the :class:`~reasonless.model.ModelConfig`;
* ``optimizer.safetensors`` + ``optimizer.json`` — the optimizer's tensor state and its scalar state
  (param groups, non-tensor per-parameter values);
* ``trainer.json`` — step, data-loader position, validation loss, hyperparameters and the RNG states
  (the torch CPU generator state is a uint8 vector, stored as a list of bytes).

The directory is built under a temporary name and renamed, so a crash never leaves a half-written
checkpoint in place. The safetensors format is small enough to write and read here (an 8-byte
little-endian header length, a JSON header ``{name: {dtype, shape, data_offsets}}`` with optional
``__metadata__``, then the raw little-endian bytes) so loading never goes through pickle.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import sys
from pathlib import Path

import torch

from .atomic import TMP_MARK, atomic_dir, crc32_file

# safetensors dtype names <-> torch dtypes
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit; a larger length means a damaged file

CHECKPOINT_DIR = "checkpoints"
# CRC-32 of every other file of a checkpoint, written last and checked on every load.
CHECKSUMS = "checksums.json"
STEP_RE = re.compile(r"^step-(\d+)$")

if sys.byteorder != "little":  # the raw bytes of a tensor are written as they lie in memory
    raise ImportError("reasonless.checkpoint writes safetensors from memory and needs a little-endian machine")


# --------------------------------------------------------------------------------------------------
# safetensors


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> None:
    """Writes ``tensors`` (any device; copied to CPU) as a safetensors file (not atomic by itself)."""
    header: dict = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("safetensors metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"safetensors: {name!r} is a {type(t).__name__}, not a tensor")
        if t.dtype not in DTYPE_NAMES:
            raise ValueError(f"safetensors: {name!r} has dtype {t.dtype}, which this writer does not support "
                             f"(supported: {', '.join(str(d) for d in DTYPE_NAMES)})")
        data = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header with spaces to keep data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for data in blobs:
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def load_safetensors(path: str | os.PathLike, with_metadata: bool = False):
    """Reads a safetensors file into CPU tensors: ``{name: tensor}`` (and the metadata if asked).

    Every malformation (truncated file, bad header JSON, unknown dtype, offsets that do not tile the
    data, shape/size mismatch) raises ValueError naming the file."""
    path = Path(path)
    blob = path.read_bytes()

    def bad(msg: str) -> ValueError:
        return ValueError(f"{path}: not a valid safetensors file: {msg}")

    if len(blob) < 8:
        raise bad(f"{len(blob)} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER or 8 + n > len(blob):
        raise bad(f"header length {n} exceeds the file ({len(blob)} bytes)")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise bad(f"header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise bad("__metadata__ must map strings to strings")
    data = memoryview(blob)[8 + n:]
    out: dict[str, torch.Tensor] = {}
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"entry {name!r} must have exactly dtype, shape and data_offsets")
        dtype = DTYPES.get(info["dtype"])
        if dtype is None:
            raise bad(f"entry {name!r} has unknown dtype {info['dtype']!r} (known: {', '.join(DTYPES)})")
        shape, offs = info["shape"], info["data_offsets"]
        if (not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                   for s in shape)):
            raise bad(f"entry {name!r} has a bad shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                or not 0 <= offs[0] <= offs[1] <= len(data)):
            raise bad(f"entry {name!r} has data_offsets {offs!r} outside the {len(data)} data bytes")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if offs[1] - offs[0] != math.prod(shape) * itemsize:
            raise bad(f"entry {name!r}: {offs[1] - offs[0]} bytes for shape {shape} of {info['dtype']}")
        spans.append((offs[0], offs[1], name))
        raw = bytearray(data[offs[0]:offs[1]])  # a private, writable copy
        flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        out[name] = flat.view(dtype).reshape(shape)
    spans.sort()
    pos = 0
    for lo, hi, name in spans:
        if lo != pos:
            raise bad(f"entry {name!r} starts at byte {lo}, expected {pos} (tensors must tile the data)")
        pos = hi
    if pos != len(data):
        raise bad(f"{len(data) - pos} trailing bytes after the last tensor")
    return (out, metadata or {}) if with_metadata else out


# --------------------------------------------------------------------------------------------------
# optimizer state


def optimizer_to_files(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Splits ``optimizer.state_dict()`` into tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars, "ids": list(state["state"])}


def optimizer_from_files(tensors: dict[str, torch.Tensor], info: dict) -> dict:
    state: dict = {int(pid): {} for pid in info["ids"]}
    for name, t in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = t
    for pid, values in info["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    groups = []
    for group in info["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):  # JSON turned the tuple into a list
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


# --------------------------------------------------------------------------------------------------
# checkpoint directories


def write_json(path: Path, obj, indent: int = 1) -> None:
    """``obj`` as JSON at ``path``, flushed to disk (the caller renames the directory it fills into place)."""
    with open(path, "w") as f:
        f.write(json.dumps(obj, indent=indent) + "\n")
        f.flush()
        os.fsync(f.fileno())


def rng_state() -> dict:
    state = {"torch_cpu": torch.get_rng_state().tolist()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.tensor(state["torch_cpu"], dtype=torch.uint8))
    if "torch_cuda" in state and torch.cuda.is_available():
        cuda = [torch.tensor(s, dtype=torch.uint8) for s in state["torch_cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(run_dir: str | os.PathLike, step: int, model: torch.nn.Module, config: dict,
                    optimizer: torch.optim.Optimizer | None, trainer_state: dict) -> Path:
    """Writes ``run_dir/checkpoints/step-{step:06d}/`` atomically and returns its path.

    ``trainer_state`` is JSON (step, data state, val_loss, hyperparameters...); the RNG states are added."""
    final = Path(run_dir) / CHECKPOINT_DIR / f"step-{step:06d}"
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(final) as tmp:
        save_safetensors(model.state_dict(), tmp / "model.safetensors", {"format": "pt"})
        write_json(tmp / "config.json", config)
        if optimizer is not None:
            tensors, info = optimizer_to_files(optimizer.state_dict())
            save_safetensors(tensors, tmp / "optimizer.safetensors")
            write_json(tmp / "optimizer.json", info)
        write_json(tmp / "trainer.json", {**trainer_state, "step": step, "rng": rng_state()})
        write_json(tmp / CHECKSUMS, {p.name: crc32_file(p) for p in sorted(tmp.iterdir()) if p.is_file()})
    return final


def check_checkpoint(ckpt: str | os.PathLike) -> None:
    """Raises ValueError naming the file when a checkpoint file differs from the CRC-32 recorded when it was saved
    (a flipped bit, a truncated copy) or is missing. Checkpoints written before checksums existed pass unchecked."""
    ckpt = Path(ckpt)
    path = ckpt / CHECKSUMS
    if not path.exists():
        return
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable ({err}); the checkpoint is damaged") from None
    for name, digest in recorded.items():
        f = ckpt / name
        if not f.is_file():
            raise ValueError(f"{f}: missing from the checkpoint")
        actual = crc32_file(f)
        if actual != digest:
            raise ValueError(f"{f}: damaged (CRC-32 {actual}, recorded {digest} when it was saved); use "
                             f"another checkpoint of the run")


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary directories of an interrupted save are skipped)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def read_trainer_state(ckpt: str | os.PathLike) -> dict:
    path = Path(ckpt) / "trainer.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable checkpoint state ({err})") from None


def read_config(ckpt: str | os.PathLike, parse=None):
    """The checkpoint's ``config.json``, as a dict or, with ``parse`` (e.g. ``ModelConfig.from_dict``), as what
    ``parse`` makes of it; every failure is a ValueError naming the file."""
    path = Path(ckpt) / "config.json"
    try:
        config = json.loads(path.read_text())
        return config if parse is None else parse(config)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: unreadable model config ({err})") from None


def load_checkpoint(ckpt: str | os.PathLike, model: torch.nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None, restore_rng: bool = False) -> dict:
    """Loads a checkpoint into ``model`` / ``optimizer`` (when given) and returns
    ``{"config": dict, "trainer": dict}``. Missing or unexpected weights raise ValueError."""
    ckpt = Path(ckpt)
    check_checkpoint(ckpt)
    config = read_config(ckpt)
    trainer = read_trainer_state(ckpt)
    if model is not None:
        weights = load_safetensors(ckpt / "model.safetensors")
        own = model.state_dict()
        missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        if missing or extra:
            raise ValueError(f"{ckpt / 'model.safetensors'}: does not fit the model (missing {missing[:5]}, "
                             f"unexpected {extra[:5]})")
        for name, t in weights.items():
            if t.shape != own[name].shape:
                raise ValueError(f"{ckpt / 'model.safetensors'}: {name} has shape {tuple(t.shape)}, the model "
                                 f"{tuple(own[name].shape)}")
        model.load_state_dict(weights)
    if optimizer is not None:
        try:
            info = json.loads((ckpt / "optimizer.json").read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{ckpt / 'optimizer.json'}: unreadable optimizer state ({err})") from None
        tensors = load_safetensors(ckpt / "optimizer.safetensors")
        optimizer.load_state_dict(optimizer_from_files(tensors, info))
    if restore_rng and "rng" in trainer:
        set_rng_state(trainer["rng"])
    return {"config": config, "trainer": trainer}


def truncate_metrics(path: str | os.PathLike, key: str, upto: int) -> None:
    """Drops the lines of a run's metrics.jsonl whose ``key`` (the step) is after ``upto``: written after the
    checkpoint a run resumes from, so the log reads as one run. A line cut short by a crash is dropped too."""
    path = Path(path)
    if not path.exists():
        return
    kept = []
    for ln in path.read_text().splitlines():
        try:
            if json.loads(ln).get(key, 0) <= upto:
                kept.append(ln)
        except ValueError:
            pass
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(ln + "\n" for ln in kept))
    os.replace(tmp, path)


def checkpoint_step(ckpt: str | os.PathLike) -> int:
    """The optimizer step of a checkpoint directory, from its name ``step-NNNNNN``."""
    m = STEP_RE.match(Path(ckpt).name)
    if m is None:
        raise ValueError(f"{ckpt}: not a checkpoint directory (expected a name like step-000100)")
    return int(m.group(1))


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int, keep_steps=()) -> list[Path]:
    """Deletes all checkpoints but the newest ``keep_last``, the best (lowest ``val_loss``) and those of the
    steps in ``keep_steps`` (a study's evaluation points); returns the deleted ones. Leftover temporary
    directories of interrupted saves are removed too."""
    ckpts = list_checkpoints(run_dir)
    keep = set(ckpts[-keep_last:]) if keep_last > 0 else set()
    keep_steps = set(keep_steps)
    keep |= {c for c in ckpts if checkpoint_step(c) in keep_steps}
    scored = []
    for c in ckpts:
        v = read_trainer_state(c).get("val_loss")
        if isinstance(v, (int, float)) and math.isfinite(v):
            scored.append((v, -ckpts.index(c), c))
    if scored:
        keep.add(min(scored)[2])
    removed = [c for c in ckpts if c not in keep]
    for c in removed:
        shutil.rmtree(c, ignore_errors=True)
    root = Path(run_dir) / CHECKPOINT_DIR
    if root.is_dir():
        for p in root.iterdir():
            if TMP_MARK in p.name and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
    return removed


def best_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    best = None
    for c in list_checkpoints(run_dir):
        v = read_trainer_state(c).get("val_loss")
        if isinstance(v, (int, float)) and math.isfinite(v) and (best is None or v < best[0]):
            best = (v, c)
    return best[1] if best else None


CHECKPOINT_CHOICES = ("best", "latest")


def resolve_checkpoint(path, which: str = "best") -> tuple[Path, str]:
    """The checkpoint directory meant by ``path`` and ``which``, and how it was chosen.

    ``path`` is a checkpoint directory (holding model.safetensors) or a run directory; for a run,
    ``which`` is "best" (lowest validation loss; the newest when no checkpoint has one), "latest", or a
    checkpoint path (absolute, or relative to the run or to the current directory)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run or checkpoint directory")
    if which not in CHECKPOINT_CHOICES:
        for cand in (Path(which), path / which, path / CHECKPOINT_DIR / which):
            if (cand / "model.safetensors").is_file():
                return cand, "path"
        raise ValueError(f"--checkpoint {which}: not a checkpoint directory (no model.safetensors there, in "
                         f"{path} or in {path / CHECKPOINT_DIR}); use best, latest or a checkpoint path")
    if (path / "model.safetensors").is_file():
        return path, "path"
    ckpts = list_checkpoints(path)
    if not ckpts:
        raise ValueError(f"{path}: no checkpoints (expected {CHECKPOINT_DIR}/step-NNNNNN/ with "
                         f"model.safetensors, or a checkpoint directory itself); has the run saved one yet?")
    if which == "best":
        best = best_checkpoint(path)
        if best is not None:
            return best, "best validation loss"
        return ckpts[-1], "latest (no checkpoint has a validation loss)"
    return ckpts[-1], "latest"
