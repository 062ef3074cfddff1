"""Packed training batches over an arm's token streams (docs/design.md §7, issue 5 item 2).

Input is a token export (:func:`reasonless.interchange.export_tokens`): each example is
``<|bos|> prompt reasoning … end <|eos|>`` and the loss falls on the response only, the tokens
``tokens[offsets[i] + prompt_lengths[i] : offsets[i + 1]]`` (``reasoning`` to ``<|eos|>``), each predicted from the
token before it.

Packing
    Every epoch the examples of the split are shuffled (seed, epoch) and placed one by one, in that order, into the
    open row with the *least* room that still fits them (online best-fit; a new row is opened when none fits).
    Best-fit in random order keeps the rows nearly full (see :attr:`PackedLoader.fill`) while the composition of
    rows changes every epoch, which first-fit-decreasing would not do (it sorts the shuffle away). An example is
    never split; the rest of a row that nothing fits into is ``<|pad|>`` (0). Examples longer than ``seq_len`` are
    skipped and reported (:attr:`PackedLoader.skipped` and a warning). The rows are shuffled once more so full and
    partly-empty rows mix.

Batches (:class:`PackedBatch`)
    ``tokens``/``targets``/``positions`` are int64 ``(B, seq_len)``; ``targets[r, j]`` is the token at ``j + 1``
    when that token is in the response of the same example, else -100 (ignored by ``cross_entropy``), so the last
    token of an example never predicts the next example's first and padding never has a loss. ``positions``
    restart at 0 for every example (and for each padding run). ``cu_seqlens`` (int32) describes the flattened batch
    ``tokens.view(-1)`` as one varlen sequence set, the form varlen attention wants: segment k is
    ``cu_seqlens[k]:cu_seqlens[k+1]``; every example is one segment and each row's trailing padding is a segment of
    its own, so row boundaries (multiples of ``seq_len``) are always segment boundaries.

Distributed
    All ranks pack the same rows (the packing depends only on seed and epoch). Global step s takes rows
    ``s*W*B … (s+1)*W*B`` and rank r the B rows at ``s*W*B + r*B``, so the ranks' shares are disjoint and together
    cover every example exactly once per epoch. The last global step is filled with empty padding rows (no loss
    tokens) so all ranks take the same number of steps; ``drop_last=True`` instead drops that incomplete step (its
    examples are not seen that epoch). A trainer should normalize the loss by the global number of loss tokens
    (a rank's rows may hold none).

Resume
    :meth:`PackedLoader.state_dict` is (epoch, step within the epoch, seed, …); a loader restored from it yields
    exactly the batches an uninterrupted loader would have yielded next. The step counts batches *handed out*, so
    a state saved after training on a batch resumes at the following one.

Validation
    :func:`split_indices` holds out a deterministic set of examples (its own ``split_seed``, independent of the
    shuffle seed); ``split="train"|"val"|"all"`` picks the part a loader reads.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numba import njit

from .vocab import PAD, vocab_for

IGNORE_INDEX = -100
TOKEN_FORMAT = "reasonless-tokens"
TOKEN_FORMAT_VERSION = 1
SPLITS = ("train", "val", "all")


# ------------------------------------------------------------------------------------------------ split
def split_indices(n: int, val_fraction: float | None = 0.02, val_count: int | None = None,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) example indices, each sorted, disjoint, together 0..n-1; the same for the same arguments.

    `val_count` wins over `val_fraction`; a positive fraction holds out at least one example (when n > 1).
    """
    if n < 1:
        raise ValueError(f"n={n}: nothing to split")
    if val_count is not None:
        if not 0 <= val_count < n:
            raise ValueError(f"val_count={val_count}: must be from 0 to {n - 1} (n={n}), leaving a training set")
        k = int(val_count)
    else:
        frac = 0.0 if val_fraction is None else float(val_fraction)
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"val_fraction={val_fraction}: must be in [0, 1)")
        k = int(round(n * frac))
        if frac > 0 and n > 1:
            k = min(max(k, 1), n - 1)
    perm = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EA1])).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


# ------------------------------------------------------------------------------------------------ packing
@njit(cache=True)
def _first_at_least(tree, size, lo):
    """Smallest capacity c >= lo with an open row (tree leaves count rows per capacity), or -1."""
    i = lo + size
    if tree[i] > 0:
        return lo
    while i > 1:
        if i % 2 == 0 and tree[i + 1] > 0:
            i += 1
            while i < size:
                i = 2 * i if tree[2 * i] > 0 else 2 * i + 1
            return i - size
        i //= 2
    return -1


@njit(cache=True)
def _tree_add(tree, size, c, delta):
    i = c + size
    while i >= 1:
        tree[i] += delta
        i //= 2


@njit(cache=True)
def _best_fit(lengths, seq_len):
    """Row of each item, placing items in the given order into the open row with the least room that fits.

    Open rows are kept in stacks per remaining capacity, with a count tree over capacities so the best fit is
    found in O(log seq_len)."""
    n = lengths.shape[0]
    size = 1
    while size < seq_len + 1:
        size *= 2
    tree = np.zeros(2 * size, np.int64)
    head = np.full(seq_len + 1, -1, np.int64)
    nxt = np.full(n, -1, np.int64)
    room = np.zeros(n, np.int64)
    row_of = np.empty(n, np.int64)
    rows = 0
    for k in range(n):
        need = lengths[k]
        c = _first_at_least(tree, size, need)
        if c < 0:
            r = rows
            rows += 1
            room[r] = seq_len
        else:
            r = head[c]
            head[c] = nxt[r]
            _tree_add(tree, size, c, -1)
        row_of[k] = r
        room[r] -= need
        left = room[r]
        if left > 0:  # a full row is closed for good
            nxt[r] = head[left]
            head[left] = r
            _tree_add(tree, size, left, 1)
    return row_of, rows


def pack_rows(lengths: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Online best-fit of items (in the given order) into rows of `seq_len`: (row_ptr, items), where row r holds
    items ``items[row_ptr[r]:row_ptr[r+1]]`` (positions into `lengths`) in placement order."""
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if len(lengths) and (lengths.min() < 1 or lengths.max() > seq_len):
        raise ValueError(f"item lengths must be from 1 to seq_len={seq_len}")
    row_of, rows = _best_fit(lengths, int(seq_len))
    items = np.argsort(row_of, kind="stable")
    row_ptr = np.zeros(rows + 1, np.int64)
    np.cumsum(np.bincount(row_of, minlength=rows), out=row_ptr[1:])
    return row_ptr, items


# ------------------------------------------------------------------------------------------------ batches
@dataclass
class PackedBatch:
    """One rank's batch. See the module docstring for the meaning of each field."""

    tokens: torch.Tensor      # int64 (B, seq_len)
    targets: torch.Tensor     # int64 (B, seq_len), IGNORE_INDEX where no loss
    positions: torch.Tensor   # int64 (B, seq_len), 0 at each example's first token
    cu_seqlens: torch.Tensor  # int32 (segments + 1,) over tokens.view(-1)
    max_seqlen: int
    segment_example: np.ndarray  # int64 (segments,): the example index of each segment, -1 for padding
    n_loss_tokens: int
    epoch: int
    step: int

    def to(self, device, non_blocking: bool = False) -> "PackedBatch":
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return PackedBatch(move(self.tokens), move(self.targets), move(self.positions), move(self.cu_seqlens),
                           self.max_seqlen, self.segment_example, self.n_loss_tokens, self.epoch, self.step)


def check_token_dir(path: str | os.PathLike, expect_vocab_size: int | None = None,
                    expect_grid: tuple[int, int] | None = None):
    """Loads a token export after checking its meta and files: (tokens memmap, offsets, prompt_lengths, meta).
    Every problem raises ValueError naming the file."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise ValueError(f"{meta_path}: missing; {path} is not a token export (make one with `reasonless export "
                         f"CORPUS --format tokens --arm ARM --out DIR`, or give `train` a study directory and --arm)")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as err:
        raise ValueError(f"{meta_path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != TOKEN_FORMAT:
        raise ValueError(f"{meta_path}: format is {meta.get('format') if isinstance(meta, dict) else None!r}, "
                         f"expected {TOKEN_FORMAT!r}")
    if meta.get("format_version") != TOKEN_FORMAT_VERSION:
        raise ValueError(f"{meta_path}: format_version {meta.get('format_version')!r}, this reader knows "
                         f"{TOKEN_FORMAT_VERSION}")
    try:
        rows, cols = int(meta["rows"]), int(meta["cols"])
        vocab_size = int(meta["vocab"]["size"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{meta_path}: rows/cols/vocab.size missing or not integers") from None
    try:
        true_size = len(vocab_for(rows, cols))
    except ValueError as err:
        raise ValueError(f"{meta_path}: {err}") from None
    if vocab_size != true_size:
        raise ValueError(f"{meta_path}: vocab size {vocab_size} does not match the {rows}x{cols} vocabulary "
                         f"({true_size} tokens)")
    if expect_vocab_size is not None and vocab_size != expect_vocab_size:
        raise ValueError(f"{meta_path}: vocabulary of {vocab_size} tokens ({rows}x{cols} grid), expected "
                         f"{expect_vocab_size}; this data is from another grid size or vocabulary")
    if expect_grid is not None and (rows, cols) != tuple(expect_grid):
        raise ValueError(f"{meta_path}: grid {rows}x{cols}, expected {expect_grid[0]}x{expect_grid[1]}")
    arrays = {}
    for name, dtype in (("tokens", np.uint16), ("offsets", np.int64), ("prompt_lengths", np.int32)):
        file = path / f"{name}.npy"
        if not file.is_file():
            raise ValueError(f"{file}: missing")
        try:
            a = np.load(file, mmap_mode="r" if name == "tokens" else None)
        except (ValueError, OSError) as err:
            raise ValueError(f"{file}: not a readable .npy file ({err})") from None
        if a.dtype != dtype or a.ndim != 1:
            raise ValueError(f"{file}: {a.dtype} array of shape {a.shape}, expected a 1-D {np.dtype(dtype)} vector")
        arrays[name] = a
    tokens, offsets, prompts = arrays["tokens"], arrays["offsets"], arrays["prompt_lengths"]
    n = len(prompts)
    if n < 1:
        raise ValueError(f"{path / 'prompt_lengths.npy'}: no examples")
    if len(offsets) != n + 1 or offsets[0] != 0 or offsets[-1] != len(tokens) or np.any(np.diff(offsets) < 1):
        raise ValueError(f"{path / 'offsets.npy'}: must be {n + 1} increasing offsets from 0 to the "
                         f"{len(tokens)} tokens of tokens.npy")
    if "examples" in meta and meta["examples"] != n:
        raise ValueError(f"{meta_path}: says {meta['examples']} examples, the arrays hold {n}")
    if np.any(prompts < 1) or np.any(prompts >= np.diff(offsets)):
        raise ValueError(f"{path / 'prompt_lengths.npy'}: every prompt must be at least <|bos|> and leave a "
                         f"non-empty response")
    return tokens, offsets, prompts, meta


class PackedLoader:
    """Packed, shuffled, sharded and resumable batches of one split of a token export.

    ``PackedLoader(path, seq_len, rows_per_batch)`` (or ``batch_tokens=T`` for ``T // seq_len`` rows) yields
    :class:`PackedBatch` es of `rows_per_batch` rows for this rank. Iterating yields the rest of the current epoch
    and then moves to the next epoch; :meth:`forever` runs epoch after epoch. ``len(loader)`` is the number of
    batches per epoch (the same on every rank).
    """

    def __init__(self, path: str | os.PathLike, seq_len: int, rows_per_batch: int | None = None, *,
                 batch_tokens: int | None = None, seed: int = 0, rank: int = 0, world_size: int = 1,
                 split: str = "train", val_fraction: float | None = 0.02, val_count: int | None = None,
                 split_seed: int = 0, shuffle: bool = True, drop_last: bool = False,
                 expect_vocab_size: int | None = None, expect_grid: tuple[int, int] | None = None):
        self.path = Path(path)
        if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 2:
            raise ValueError(f"seq_len={seq_len!r}: must be an integer ≥ 2")
        if (rows_per_batch is None) == (batch_tokens is None):
            raise ValueError("give exactly one of rows_per_batch and batch_tokens")
        if rows_per_batch is None:
            rows_per_batch = batch_tokens // seq_len
            if rows_per_batch < 1:
                raise ValueError(f"batch_tokens={batch_tokens} is smaller than one row of seq_len={seq_len}")
        if rows_per_batch < 1:
            raise ValueError(f"rows_per_batch={rows_per_batch}: must be at least 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank}, world_size={world_size}: need 0 ≤ rank < world_size")
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: choose one of {', '.join(SPLITS)}")
        self.seq_len, self.rows_per_batch = int(seq_len), int(rows_per_batch)
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed, self.split, self.shuffle, self.drop_last = int(seed), split, bool(shuffle), bool(drop_last)
        self.tokens, self.offsets, self.prompt_lengths, self.meta = check_token_dir(
            self.path, expect_vocab_size, expect_grid)
        self.vocab_size = int(self.meta["vocab"]["size"])
        n = len(self.prompt_lengths)
        if split == "all":
            idx = np.arange(n, dtype=np.int64)
        else:
            train, val = split_indices(n, val_fraction, val_count, split_seed)
            idx = train if split == "train" else val
            if len(idx) == 0:
                raise ValueError(f"{self.path}: the {split} split is empty ({n} examples, val_fraction="
                                 f"{val_fraction}, val_count={val_count})")
        lengths = np.diff(self.offsets)
        too_long = lengths[idx] > self.seq_len
        #: original indices of the examples skipped because they are longer than seq_len
        self.skipped = idx[too_long]
        self.indices = idx[~too_long]
        if len(self.indices) == 0:
            raise ValueError(f"{self.path}: seq_len={self.seq_len} is shorter than every example of the {split} "
                             f"split (shortest {int(lengths[idx].min())} tokens); raise seq_len")
        if len(self.skipped):
            warnings.warn(f"{self.path}: {len(self.skipped)} of {len(idx)} {split} examples are longer than "
                          f"seq_len={self.seq_len} (longest {int(lengths[idx].max())}) and are skipped; first: "
                          f"{self.skipped[:5].tolist()}", stacklevel=2)
        self.lengths = lengths
        self.epoch, self.step = 0, 0
        self._plan_epoch, self._plan = None, None

    # -------------------------------------------------------------------------------------------- plan
    def _epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(row_ptr, example indices) of the epoch's rows, identical on every rank."""
        if self._plan_epoch != epoch:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
            order = rng.permutation(self.indices) if self.shuffle else self.indices
            row_ptr, items = pack_rows(self.lengths[order], self.seq_len)
            if self.shuffle:
                perm = rng.permutation(len(row_ptr) - 1)
                sizes = np.diff(row_ptr)[perm]
                starts = row_ptr[:-1][perm]
                row_ptr = np.zeros(len(perm) + 1, np.int64)
                np.cumsum(sizes, out=row_ptr[1:])
                items = items[np.repeat(starts - row_ptr[:-1], sizes) + np.arange(row_ptr[-1])]
            self._plan_epoch, self._plan = epoch, (row_ptr, order[items])
        return self._plan

    @property
    def rows_per_epoch(self) -> int:
        return len(self._epoch_plan(self.epoch)[0]) - 1

    def __len__(self) -> int:
        rows, per_step = self.rows_per_epoch, self.rows_per_batch * self.world_size
        return rows // per_step if self.drop_last else math.ceil(rows / per_step)

    @property
    def fill(self) -> float:
        """Share of the current epoch's row tokens that are example tokens (1 - padding)."""
        row_ptr, ex = self._epoch_plan(self.epoch)
        return float(self.lengths[ex].sum()) / ((len(row_ptr) - 1) * self.seq_len)

    # -------------------------------------------------------------------------------------------- batches
    def _batch(self, epoch: int, step: int) -> PackedBatch:
        row_ptr, ex_all = self._epoch_plan(epoch)
        S, B = self.seq_len, self.rows_per_batch
        first = step * B * self.world_size + self.rank * B
        rows = np.arange(first, first + B)
        real = rows < len(row_ptr) - 1  # rows past the end are padding rows of the last step
        counts = np.zeros(B, np.int64)
        counts[real] = np.diff(row_ptr)[rows[real]]
        lo = row_ptr[np.minimum(rows, len(row_ptr) - 1)]
        ex = ex_all[np.repeat(lo, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)]
        lens = self.lengths[ex]
        row_of_ex = np.repeat(np.arange(B), counts)
        # column of each example in its row: running sum of lengths restarted at each row
        ends = np.cumsum(lens)
        row_base = np.repeat(np.concatenate(([0], ends))[np.cumsum(counts) - counts], counts)
        col = ends - lens - row_base
        dst_start = row_of_ex * S + col
        total = int(lens.sum())
        within = np.arange(total) - np.repeat(ends - lens, lens)
        src = np.repeat(self.offsets[ex], lens) + within
        dst = np.repeat(dst_start, lens) + within
        flat_tokens = np.full(B * S, PAD, np.int64)
        flat_tokens[dst] = self.tokens[src]
        positions = np.zeros(B * S, np.int64)
        positions[dst] = within
        lens_rep = np.repeat(lens, lens)
        loss = within >= np.repeat(self.prompt_lengths[ex].astype(np.int64), lens) - 1
        loss &= within <= lens_rep - 2
        targets = np.full(B * S, IGNORE_INDEX, np.int64)
        targets[dst[loss]] = self.tokens[src[loss] + 1]
        if total and int(flat_tokens.max()) >= self.vocab_size:
            raise ValueError(f"{self.path / 'tokens.npy'}: token id {int(flat_tokens.max())} outside the "
                             f"vocabulary of {self.vocab_size}")
        # segments: each example, then the row's trailing padding (if any) as a segment of its own
        used = np.zeros(B, np.int64)
        np.add.at(used, row_of_ex, lens)
        pad = S - used
        for r in np.flatnonzero(pad):  # padding restarts positions like any segment
            positions[r * S + used[r]:(r + 1) * S] = np.arange(pad[r])
        seg_row = np.concatenate([row_of_ex, np.flatnonzero(pad)])
        seg_start = np.concatenate([dst_start, np.flatnonzero(pad) * S + used[pad > 0]])
        seg_ex = np.concatenate([ex, np.full(int((pad > 0).sum()), -1, np.int64)])
        order = np.lexsort((seg_start, seg_row))
        seg_start, seg_ex = seg_start[order], seg_ex[order]
        cu = np.append(seg_start, B * S).astype(np.int32)
        return PackedBatch(tokens=torch.from_numpy(flat_tokens.reshape(B, S)),
                           targets=torch.from_numpy(targets.reshape(B, S)),
                           positions=torch.from_numpy(positions.reshape(B, S)),
                           cu_seqlens=torch.from_numpy(cu), max_seqlen=int(np.diff(cu).max()),
                           segment_example=seg_ex, n_loss_tokens=int(loss.sum()), epoch=epoch, step=step)

    def __iter__(self):
        """The rest of the current epoch; afterwards the loader stands at the start of the next."""
        if self.step >= len(self):
            self.epoch, self.step = self.epoch + 1, 0
        epoch = self.epoch
        while self.epoch == epoch and self.step < len(self):
            step = self.step
            batch = self._batch(epoch, step)
            self.step = step + 1  # counted before handing out: a state saved after using it resumes after it
            yield batch
        if self.epoch == epoch and self.step >= len(self):
            self.epoch, self.step = epoch + 1, 0

    def forever(self):
        """Batches epoch after epoch, without end."""
        while True:
            yield from self

    # -------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed, "seq_len": self.seq_len,
                "global_rows": self.rows_per_batch * self.world_size, "split": self.split,
                "examples": int(len(self.indices)), "drop_last": self.drop_last, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        """Restores the position (and seed); the batch geometry must be the one the state was saved with,
        since another one would pack and deal different batches."""
        mine = self.state_dict()
        for key in ("seq_len", "global_rows", "split", "examples", "drop_last", "shuffle"):
            if key in state and state[key] != mine[key]:
                raise ValueError(f"data state has {key}={state[key]!r}, this loader {mine[key]!r}; resume with "
                                 f"the same data, split and batch shape (rows_per_batch × world_size)")
        epoch, step = int(state["epoch"]), int(state["step"])
        if epoch < 0 or step < 0:
            raise ValueError(f"data state epoch={epoch}, step={step}: must be ≥ 0")
        self.seed, self.epoch, self.step = int(state["seed"]), epoch, step
        self._plan_epoch, self._plan = None, None
