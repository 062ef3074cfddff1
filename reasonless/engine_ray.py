"""Ray as the engine for work split into independent parts (docs/design.md §11): ``--engine ray``.

Every part is a pure function of its inputs (a corpus shard of (corpus key, shard index)), runs as one Ray task and
writes its own output under a temporary name renamed when complete, into a directory every node sees (a shared
filesystem: NFS, Lustre, a mounted bucket). The driver keeps at most ``tasks`` parts in flight, feeds its progress
bar from finished tasks and merges the results (for a corpus: the manifest) at the end. Ray retries a task whose
worker died (``max_retries``, also for OSError raised by the task); a part that fails for good stops the run with
its name and error, and the finished parts stay on disk: rerunning the command keeps them (checked by CRC-32) and
resubmits the rest. There is no scheduler here: placement, retries and worker processes are Ray's.

Each worker must be able to import ``reasonless`` (installed on every node, or shipped with a Ray runtime_env).
"""
from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Callable, Iterable

from .interchange import span
from .progress import Progress

DEFAULT_MAX_RETRIES = 3


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError("--engine ray needs Ray: pip install 'reasonless[ray]' (or pip install ray)") from None
    return ray


@contextlib.contextmanager
def session(address: str | None = None):
    """Uses the Ray instance this process is already connected to, else connects to `address` (``auto``: the
    cluster this node belongs to; None: a new local instance) for the block, and disconnects after it."""
    ray = _ray()
    own = not ray.is_initialized()
    if own:
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    try:
        yield ray
    finally:
        if own:
            ray.shutdown()


def cluster_cpus() -> int:
    return max(1, int(_ray().cluster_resources().get("CPU", 1)))


def cluster_gpus() -> int:
    return int(_ray().cluster_resources().get("GPU", 0))


class TaskFailed(OSError):
    """A part whose Ray task failed after its retries (an OSError, so the command line reports it as an error of
    the environment: a lost node, a full or unreachable shared disk, ...)."""


def run_tasks(remote_fn, parts: Iterable[tuple[str, tuple, int]], *, tasks: int | None = None,
              progress: bool = False, unit: str = "examples", on_result: Callable | None = None,
              claim: Callable[[int], bool] | None = None) -> list:
    """Runs ``remote_fn.remote(*args)`` for each ``(name, args, size)`` of `parts`, at most `tasks` in flight
    (default: twice the cluster's CPUs), and returns the results in the order of `parts`. The progress bar counts
    the `size` of each finished part. With ``on_result``, each result is handed to ``on_result(i, result)`` as it
    arrives instead (and not kept: the returned list holds None). With ``claim``, ``claim(i)`` is asked just before
    part i is submitted, and a part it refuses is skipped (someone else makes it; its result stays None). A part
    whose task fails after Ray's retries raises :class:`TaskFailed` naming it and its error; the others in flight
    are cancelled."""
    ray = _ray()
    parts = list(parts)
    limit = tasks or 2 * cluster_cpus()
    if limit < 1:
        raise ValueError(f"tasks={tasks}: must be at least 1")
    bar = Progress(sum(size for _, _, size in parts), unit=unit, enabled=progress)
    results: list = [None] * len(parts)
    pending: dict = {}
    next_part = 0
    try:
        while next_part < len(parts) or pending:
            while next_part < len(parts) and len(pending) < limit:
                if claim is None or claim(next_part):
                    pending[remote_fn.remote(*parts[next_part][1])] = next_part
                else:
                    bar.update(parts[next_part][2])
                next_part += 1
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            try:
                value = ray.get(ready[0])
            except Exception as err:  # RayTaskError (the task raised), WorkerCrashedError (retries exhausted), …
                cause = getattr(err, "cause", None) or err
                raise TaskFailed(f"{parts[i][0]} failed for good (after Ray's retries): "
                                   f"{type(cause).__name__}: {_first_line(cause)}") from None
            if on_result is None:
                results[i] = value
            else:
                on_result(i, value)
            bar.update(parts[i][2])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        bar.close()
    return results


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    # A RayTaskError's text is the remote traceback; its last line is the exception itself.
    return text.splitlines()[-1] if "Traceback" in text else text


# --------------------------------------------------------------------------------------------- corpus generation
def _shard_task(out: str, key: dict, index: int, threads: int) -> dict:
    from .corpus import make_shard_batch, write_shard

    return write_shard(Path(out), index, make_shard_batch(key, index, threads), key)


def shard_engine(address: str | None = None, tasks: int | None = None, threads: int = 1,
                 max_retries: int = DEFAULT_MAX_RETRIES, progress: bool = False):
    """An ``engine`` for :func:`reasonless.corpus.generate`: one Ray task per missing shard, each using `threads`
    cores (``num_cpus``), retried up to `max_retries` times. When the command starts its own local Ray instance
    (no `address`, no Ray connection yet: one machine), this process makes shards too, from the front of the list
    while Ray takes them from the back, so that Ray's start-up and its workers' warm-up are spent working. Every
    shard is the same pure function of its index wherever it is made."""
    remote = _remote(_shard_task, threads, max_retries)  # checks the arguments before any work

    def engine(out: Path, key: dict, todo: list[int]) -> dict[int, dict]:
        size, count = key["shard_size"], key["count"]
        out = Path(out).resolve()
        local = None if address is not None or _ray().is_initialized() else _LocalShards(out, key, todo)
        order = todo[::-1] if local is not None else todo
        parts = [(_label(i, i * size, min(size, count - i * size)), (str(out), key, i, threads),
                  min(size, count - i * size)) for i in order]
        try:
            with session(address):
                entries = run_tasks(remote, parts, tasks=tasks, progress=progress,
                                    claim=None if local is None else lambda j: local.claim(order[j]))
        finally:
            if local is not None:
                local.stop()
        made = local.finish() if local is not None else {}
        if made and progress:
            print(f"{len(made)} of {len(todo)} shards made in this process, the rest by Ray tasks", file=sys.stderr)
        return {**made, **{int(e["index"]): e for e in entries if e is not None}}

    return engine


class _LocalShards:
    """Makes shards of `todo` in order on a thread of this process (the maze kernels and A* release the GIL), on
    one core, until
    it meets one that Ray has :meth:`claim`-ed, or :meth:`stop`. :meth:`finish` waits for it and returns the
    manifest entries of the shards it made (or raises its error)."""

    def __init__(self, out: Path, key: dict, todo: list[int]):
        self._out, self._key, self._todo = out, key, todo
        self._lock = threading.Lock()
        self._taken: set[int] = set()
        self._stopped = False
        self._entries: dict[int, dict] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="local-shards", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from .corpus import make_shard_batch, write_shard

        try:
            for i in self._todo:
                with self._lock:
                    if self._stopped or i in self._taken:
                        return
                    self._taken.add(i)
                # One core: beside Ray's workers, one per core, more would only take turns with them.
                self._entries[i] = write_shard(self._out, i, make_shard_batch(self._key, i, 1), self._key)
        except BaseException as err:  # re-raised by finish(), in the caller's thread
            self._error = err

    def claim(self, index: int) -> bool:
        """True when shard `index` is Ray's to make (this process has not started it)."""
        with self._lock:
            if index in self._taken:
                return False
            self._taken.add(index)
            return True

    def stop(self) -> None:
        with self._lock:
            self._stopped = True

    def finish(self) -> dict[int, dict]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return dict(self._entries)


def _remote(fn, threads: int, max_retries: int):
    if max_retries < 0 or threads < 1:
        raise ValueError(f"max_retries={max_retries}, threads={threads}: need max_retries ≥ 0 and threads ≥ 1")
    return _ray().remote(num_cpus=threads, max_retries=max_retries, retry_exceptions=[OSError])(fn)


def _label(k: int, first: int, count: int) -> str:
    return f"shard {k} (examples {first:,}–{first + count - 1:,})"


def _shard_parts(corpus, todo: Iterable[int], args: Callable[[int], tuple]) -> list[tuple[str, tuple, int]]:
    """(name, task arguments, examples) of each shard in `todo`."""
    return [(_label(k, *span(corpus, k)), args(k), span(corpus, k)[1]) for k in todo]


# --------------------------------------------------------------------------------------------- verification
def _verify_task(corpus_path: str, k: int, mode: str, threads: int):
    from .corpus import Corpus
    from .verifier import verify_corpus

    return verify_corpus(Corpus(corpus_path).shard_corpus(k), mode=mode, threads=threads)


def verify_corpus(corpus, mode: str = "strict", threads: int = 1, per_example=None, address: str | None = None,
                  tasks: int | None = None, max_retries: int = DEFAULT_MAX_RETRIES, progress: bool = False):
    """:func:`reasonless.verifier.verify_corpus` with one Ray task per shard; the driver gathers the verdicts (and
    writes `per_example`, in corpus order)."""
    import json

    from .atomic import atomic_file
    from .verifier import Verdicts

    remote = _remote(_verify_task, threads, max_retries)
    result = Verdicts.empty(len(corpus), mode)
    path = str(Path(corpus.path).resolve())
    parts = _shard_parts(corpus, range(len(corpus.shards)), lambda k: (path, k, mode, threads))

    def place(k: int, part) -> None:
        first = span(corpus, k)[0]
        result.assign(slice(first, first + len(part)), part)

    with session(address):
        run_tasks(remote, parts, tasks=tasks, progress=progress, on_result=place)
    if per_example is not None:
        with atomic_file(Path(per_example), "w") as sink:
            for i, d in enumerate(result.per_example()):
                sink.write(json.dumps({"index": i, **d}) + "\n")
    return result


# --------------------------------------------------------------------------------------------- exports
def _export_task(fmt: str, corpus_path: str, k: int, out: str, arm: str, seed: int, split: str, threads: int):
    from .corpus import Corpus
    from .interchange import export_jsonl, export_tokens
    from .parquet import export_parquet

    corpus = Corpus(corpus_path)
    if fmt == "parquet":
        return export_parquet(corpus, out, arm, seed, threads, split=split, shard=k)
    if fmt == "jsonl":
        return export_jsonl(corpus, out, arm, seed, threads, shard=k)
    return export_tokens(corpus, out, arm, seed, threads, shard=k)


def export(corpus, out, fmt: str, arm: str = "correct", seed: int = 0, threads: int = 1, split: str = "train",
           address: str | None = None, tasks: int | None = None, max_retries: int = DEFAULT_MAX_RETRIES,
           progress: bool = False) -> dict:
    """`reasonless export --engine ray`: one Ray task per corpus shard writes that shard's part (corpus-wide indexes
    and arm), then the driver puts the parts together:

    * ``parquet``: `out` is a directory of ``part-NNNNN.parquet`` files (the layout of :mod:`reasonless.parquet`)
      and ``_parquet.json`` (the export's metadata and the part names; Parquet dataset readers skip names that
      start with ``_``), the parts left as they are;
    * ``jsonl`` and ``tokens``: the parts go to ``OUT.parts/`` and are concatenated into `out`, byte-identical to
      the single-process export, then removed.

    A rerun keeps the parts already complete for the same export (same corpus, format, arm, seed, split)."""
    import json
    import shutil

    from .arms import check_arm
    from .atomic import atomic_file

    check_arm(arm)
    if fmt not in ("parquet", "jsonl", "tokens"):
        raise ValueError(f"unknown export format {fmt!r}")
    out = Path(out)
    if fmt == "parquet":
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out}: exists and is not a directory (--engine ray writes a directory of part files)")
        parts_dir = out
    else:
        parts_dir = out.with_name(out.name + ".parts")
    key = {"corpus": str(Path(corpus.path).resolve()), "written": corpus.manifest.get("written"), "format": fmt,
           "arm": arm, "arm_seed": seed, "split": split}
    key_path = parts_dir / "_key.json"
    if fmt != "parquet" and parts_dir.is_dir() and _read_json(key_path) != key:
        shutil.rmtree(parts_dir)  # parts of another export
    parts_dir.mkdir(parents=True, exist_ok=True)
    if fmt != "parquet":
        key_path.write_text(json.dumps(key) + "\n")
    suffix = {"parquet": ".parquet", "jsonl": ".jsonl", "tokens": ""}[fmt]
    names = [f"part-{k:05d}{suffix}" for k in range(len(corpus.shards))]
    todo = [k for k in range(len(corpus.shards)) if not _part_done(parts_dir / names[k], fmt, key, corpus, k)]
    path = str(Path(corpus.path).resolve())
    parts = _shard_parts(corpus, todo, lambda k: (fmt, path, k, str(parts_dir.resolve() / names[k]), arm, seed,
                                                  split, threads))
    with session(address):
        run_tasks(_remote(_export_task, threads, max_retries), parts, tasks=tasks, progress=progress)
    if fmt == "parquet":
        from .parquet import export_meta

        meta = {**export_meta(corpus, arm, seed, split), "parts": names}
        with atomic_file(out / "_parquet.json", "w") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")
        return meta
    if fmt == "jsonl":
        _concatenate_jsonl(parts_dir, names, out)
        meta = {"examples": len(corpus)}
    else:
        meta = _concatenate_tokens(parts_dir, names, out, len(corpus))
    shutil.rmtree(parts_dir)
    return meta


def _read_json(path: Path):
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _part_done(path: Path, fmt: str, key: dict, corpus, k: int) -> bool:
    """Whether a part is complete (parts are renamed into place only when written) and of this export."""
    if fmt == "parquet":
        from .parquet import export_meta, read_meta

        return read_meta(path) == export_meta(corpus, key["arm"], key["arm_seed"], key["split"], shard=k)
    return path.is_file() if fmt == "jsonl" else (path / "meta.json").is_file()


def _concatenate_jsonl(parts_dir: Path, names: list[str], out: Path) -> None:
    import shutil

    from .atomic import atomic_file

    with atomic_file(out, "wb") as f:
        for name in names:
            with open(parts_dir / name, "rb") as part:
                shutil.copyfileobj(part, f, 1 << 22)


def _concatenate_tokens(parts_dir: Path, names: list[str], out: Path, n: int) -> dict:
    """One token dir from the parts' token dirs: the same bytes as :func:`reasonless.interchange.export_tokens`
    of the whole corpus."""
    import json
    import shutil

    import numpy as np

    from .atomic import atomic_dir
    from .interchange import NPY_HEADER_BYTES, _npy_header

    offsets = np.zeros(n + 1, dtype=np.int64)
    prompts = np.empty(n, dtype=np.int32)
    meta, done, total = None, 0, 0
    with atomic_dir(out) as tmp:
        with open(tmp / "tokens.npy", "wb") as f:
            f.write(_npy_header(0))
            for name in names:
                part_offsets = np.load(parts_dir / name / "offsets.npy")
                count = len(part_offsets) - 1
                offsets[done + 1:done + count + 1] = total + part_offsets[1:]
                prompts[done:done + count] = np.load(parts_dir / name / "prompt_lengths.npy")
                with open(parts_dir / name / "tokens.npy", "rb") as part:
                    part.seek(NPY_HEADER_BYTES)
                    shutil.copyfileobj(part, f, 1 << 22)
                done, total = done + count, total + int(part_offsets[-1])
                meta = meta or json.loads((parts_dir / name / "meta.json").read_text())
            f.seek(0)
            f.write(_npy_header(total))
        if done != n:
            raise ValueError(f"{parts_dir}: the parts hold {done:,} examples, the corpus {n:,}")
        meta.update(examples=n, tokens=total)
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "prompt_lengths.npy", prompts)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


# --------------------------------------------------------------------------------------------- evaluation
def _eval_task(run: str, suites_dir: str, suite: str, out: str, kwargs: dict) -> dict:
    from .evaluate import evaluate

    return evaluate(run, suites_dir, out, suites=[suite], **kwargs)


def evaluate(run, suites_dir, out, *, suites=None, checkpoint: str = "best", device=None, command: str | None = None,
             threads: int = 1, address: str | None = None, tasks: int | None = None,
             max_retries: int = DEFAULT_MAX_RETRIES, progress: bool = False, **kwargs) -> dict:
    """`reasonless eval --engine ray`: :func:`reasonless.evaluate.evaluate` with one Ray task per suite (on a GPU
    of its own, ``num_gpus=1``, when the cluster has GPUs and `device` is not ``cpu``). Each task writes its suite's
    evaluation to ``OUT.ray/SUITE.jsonl`` (kept on a rerun when made with the same settings); the driver writes
    `out` and its summary, the same as a single-process evaluation of the suites in the same order."""
    import json
    import shutil

    from .atomic import atomic_file
    from .evaluate import find_suites, summary_path

    chosen = find_suites(suites_dir, suites)  # checks the names before anything runs
    out = Path(out)
    parts_dir = out.with_name(out.name + ".ray")
    parts_dir.mkdir(parents=True, exist_ok=True)
    kwargs = {**kwargs, "checkpoint": checkpoint, "device": device, "command": command, "progress": False}
    key = {"run": str(Path(run).resolve()), "suites_dir": str(suites_dir), **{k: repr(v) for k, v in kwargs.items()}}
    with session(address) as ray:
        gpus = 1 if cluster_gpus() > 0 and str(device or "cuda").startswith("cuda") else 0
        remote = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=max_retries,
                            retry_exceptions=[OSError])(_eval_task)
        todo = [s for s in chosen if _read_json(parts_dir / f"{s.name}.key.json") != key
                or not summary_path(parts_dir / f"{s.name}.jsonl").is_file()]
        for s in todo:
            (parts_dir / f"{s.name}.key.json").write_text(json.dumps(key) + "\n")
        n = kwargs.get("n")
        parts = [(f"suite {s.name}", (str(run), str(suites_dir), s.name, str(parts_dir.resolve() / f"{s.name}.jsonl"),
                                      kwargs), min(n, len(s.corpus)) if n else len(s.corpus)) for s in todo]
        run_tasks(remote, parts, tasks=tasks, progress=progress, unit="problems")
    summary = None
    with atomic_file(out, "wb") as f:
        for s in chosen:
            with open(parts_dir / f"{s.name}.jsonl", "rb") as part:
                shutil.copyfileobj(part, f, 1 << 22)
            part_summary = json.loads(summary_path(parts_dir / f"{s.name}.jsonl").read_text())
            if summary is None:
                summary = {**part_summary, "meta": {**part_summary["meta"], "jsonl": out.name}, "suites": {}}
            summary["suites"][s.name] = part_summary["suites"][s.name]
    with atomic_file(summary_path(out), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    shutil.rmtree(parts_dir)
    return summary
