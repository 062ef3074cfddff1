// Batch loops of the tokenizer: check each example, then write it, parallel over examples.
#include "tokens.hpp"

#include <atomic>
#include <sstream>

#include "parallel.hpp"

namespace reasonless::tokens {
namespace {

// Examples per parallel chunk: large enough to amortize the atomic hand-out, small enough to balance.
constexpr int64_t CHUNK = 64;
// More ops or plan cells than this in one example can only come from corrupt offsets, and would overflow
// the length arithmetic.
constexpr int64_t MAX_ITEMS = int64_t{1} << 40;

bool offsets_ok(const int64_t* off, int64_t i, int64_t size) {
  const int64_t lo = off[i], hi = off[i + 1];
  return lo >= 0 && hi >= lo && hi - lo <= MAX_ITEMS && (size < 0 || hi <= size);
}

bool in_grid(const int32_t* xy, int rows, int cols) {
  return xy[0] >= 0 && xy[0] < cols && xy[1] >= 0 && xy[1] < rows;
}

// Lowers `first` to i unless it already holds a smaller index.
void record_fault(std::atomic<int64_t>& first, int64_t i) {
  int64_t cur = first.load();
  while (i < cur && !first.compare_exchange_weak(cur, i)) {
  }
}

// Runs per_example(i, worker) over the batch in parallel; returns the first example with a fault.
template <class PerExample>
FaultReport run_checked(const Batch& b, int threads, PerExample per_example) {
  std::atomic<int64_t> first{b.n};
  parallel_chunks(b.n, CHUNK, threads, [&](int64_t begin, int64_t end, int worker) {
    // Chunks start in increasing order, so skipping those past a known fault never hides an earlier one.
    if (begin > first.load(std::memory_order_relaxed)) return;
    for (int64_t i = begin; i < end; ++i) {
      if (per_example(i, worker) != Fault::none) {
        record_fault(first, i);
        return;
      }
    }
  });
  FaultReport r;
  r.example = first.load();
  if (r.example < b.n) {
    // Re-run the failing example alone for its fault kind (the workers keep no per-example record).
    r.fault = per_example(r.example, 0);
  }
  return r;
}

int64_t ops_count(const Batch& b, int64_t i) { return b.ops_offsets[i + 1] - b.ops_offsets[i]; }
int64_t plan_count(const Batch& b, int64_t i) { return b.plan_offsets[i + 1] - b.plan_offsets[i]; }

Example example_at(const Batch& b, int64_t i) {
  const int64_t cells = int64_t{b.rows} * b.cols;
  Example ex;
  ex.walls = b.walls + i * cells;
  ex.start[0] = b.start[2 * i];
  ex.start[1] = b.start[2 * i + 1];
  ex.goal[0] = b.goal[2 * i];
  ex.goal[1] = b.goal[2 * i + 1];
  ex.ops = b.ops + 3 * b.ops_offsets[i];
  ex.n_ops = ops_count(b, i);
  ex.plan = b.plan + b.plan_offsets[i];
  ex.n_plan = plan_count(b, i);
  return ex;
}

const char* arm_name(Arm arm) { return arm == Arm::correct ? "correct" : arm == Arm::no_costs ? "no_costs" : "none"; }

}  // namespace

Fault check_example(const Batch& b, int64_t i, Arm arm, bool contents, int64_t* n_walls) {
  const int64_t cells = int64_t{b.rows} * b.cols;
  if (b.start && !in_grid(b.start + 2 * i, b.rows, b.cols)) return Fault::start;
  if (b.goal && !in_grid(b.goal + 2 * i, b.rows, b.cols)) return Fault::goal;
  const int64_t w = count_walls(b.walls + i * cells, cells);
  if (w < 0) return Fault::wall_value;
  *n_walls = w;
  if (!offsets_ok(b.ops_offsets, i, b.n_op_rows)) return Fault::ops_offsets;
  if (!offsets_ok(b.plan_offsets, i, b.n_plan_cells)) return Fault::plan_offsets;
  if (!contents) return Fault::none;
  if (arm != Arm::none) {
    // Maxima rather than early exits keep the loop branch-free; the data is in cache for the write anyway.
    const uint16_t* op = b.ops + 3 * b.ops_offsets[i];
    const int64_t n_ops = ops_count(b, i);
    uint16_t top_cell = 0, top_cost = 0;
    for (int64_t k = 0; k < n_ops; ++k, op += 3) {
      top_cell = std::max<uint16_t>(top_cell, op[0] & (CLOSE_BIT - 1));
      top_cost = std::max(top_cost, std::max(op[1], op[2]));
    }
    if (n_ops && top_cell >= cells) return Fault::op_cell;
    if (n_ops && top_cost >= cells) return Fault::op_cost;
  }
  const uint16_t* plan = b.plan + b.plan_offsets[i];
  const int64_t n_plan = plan_count(b, i);
  uint16_t top = 0;
  for (int64_t k = 0; k < n_plan; ++k) top = std::max(top, plan[k]);
  if (n_plan && top >= cells) return Fault::plan_cell;
  return Fault::none;
}

std::string describe(const Batch& b, const FaultReport& r, Arm arm, const int64_t* out_offsets, int64_t out_size) {
  const int64_t i = r.example, cells = int64_t{b.rows} * b.cols;
  std::ostringstream s;
  s << "example " << i << ": ";
  const std::string grid = std::to_string(b.rows) + "x" + std::to_string(b.cols);
  switch (r.fault) {
    case Fault::none:
      s << "no fault";
      break;
    case Fault::start:
    case Fault::goal: {
      const int32_t* xy = (r.fault == Fault::start ? b.start : b.goal) + 2 * i;
      s << (r.fault == Fault::start ? "start" : "goal") << " (x=" << xy[0] << ", y=" << xy[1]
        << ") is outside the " << grid << " grid (x < cols, y < rows)";
      break;
    }
    case Fault::wall_value: {
      const uint8_t* w = b.walls + i * cells;
      int64_t k = 0;
      while (k < cells && w[k] <= 1) ++k;
      s << "walls[" << i << ", " << k << "] = " << int(k < cells ? w[k] : 0) << ", but walls must be 0 or 1";
      break;
    }
    case Fault::ops_offsets:
    case Fault::plan_offsets: {
      const bool ops = r.fault == Fault::ops_offsets;
      const int64_t* off = ops ? b.ops_offsets : b.plan_offsets;
      const int64_t size = ops ? b.n_op_rows : b.n_plan_cells;
      const char* name = ops ? "ops_offsets" : "plan_offsets";
      s << name << "[" << i << "] = " << off[i] << " and " << name << "[" << i + 1 << "] = " << off[i + 1]
        << " must be non-decreasing and non-negative";
      if (size >= 0) s << " and at most " << size << (ops ? " (rows of ops)" : " (length of plan)");
      if (off[i + 1] - off[i] > MAX_ITEMS) s << "; a span of " << off[i + 1] - off[i] << " is not plausible";
      break;
    }
    case Fault::op_cell:
    case Fault::op_cost: {
      const int64_t base = b.ops_offsets[i];
      for (int64_t k = 0; k < ops_count(b, i); ++k) {
        const uint16_t* op = b.ops + 3 * (base + k);
        const int cell = op[0] & (CLOSE_BIT - 1);
        if (r.fault == Fault::op_cell && cell >= cells) {
          s << "op " << k << " (ops row " << base + k << ") has cell " << cell << " (column 0 = " << op[0]
            << "), outside the " << cells << " cells of the " << grid << " grid";
          break;
        }
        if (r.fault == Fault::op_cost && (op[1] >= cells || op[2] >= cells)) {
          s << "op " << k << " (ops row " << base + k << ") has g=" << op[1] << ", h=" << op[2]
            << "; costs must be below rows*cols = " << cells << " (the vocabulary ends at c" << cells - 1 << ")";
          break;
        }
      }
      break;
    }
    case Fault::plan_cell: {
      const int64_t base = b.plan_offsets[i];
      for (int64_t k = 0; k < plan_count(b, i); ++k) {
        if (b.plan[base + k] >= cells) {
          s << "plan step " << k << " (plan[" << base + k << "]) is cell " << b.plan[base + k] << ", outside the "
            << cells << " cells of the " << grid << " grid";
          break;
        }
      }
      break;
    }
    case Fault::out_span: {
      int64_t w = 0;
      check_example(b, i, arm, false, &w);
      const int64_t len = sequence_length(w, ops_count(b, i), plan_count(b, i), arm);
      s << "out_offsets[" << i << "] = " << out_offsets[i] << ", out_offsets[" << i + 1 << "] = " << out_offsets[i + 1]
        << " do not frame its " << len << " tokens (arm " << arm_name(arm) << ") inside out of length " << out_size
        << "; size out_offsets from token_lengths with the same arm";
      break;
    }
  }
  return s.str();
}

FaultReport batch_lengths(const Batch& b, Arm arm, int threads, int64_t* lengths, int32_t* prompt_lengths) {
  return run_checked(b, threads, [&](int64_t i, int) {
    int64_t w = 0;
    const Fault f = check_example(b, i, arm, false, &w);
    if (f != Fault::none) return f;
    lengths[i] = sequence_length(w, ops_count(b, i), plan_count(b, i), arm);
    prompt_lengths[i] = static_cast<int32_t>(prompt_length(w));
    return Fault::none;
  });
}

FaultReport batch_tokenize(const Batch& b, Arm arm, uint16_t* out, int64_t out_size, const int64_t* out_offsets,
                           int threads) {
  const Vocab v(b.rows, b.cols);
  const std::vector<uint32_t> xy = cell_coord_table(v);
  return run_checked(b, threads, [&](int64_t i, int) {
    int64_t w = 0;
    const Fault f = check_example(b, i, arm, true, &w);
    if (f != Fault::none) return f;
    const int64_t lo = out_offsets[i], hi = out_offsets[i + 1];
    if (lo < 0 || hi > out_size || hi - lo != sequence_length(w, ops_count(b, i), plan_count(b, i), arm))
      return Fault::out_span;
    write_sequence(out + lo, example_at(b, i), v, xy.data(), arm);
    return Fault::none;
  });
}

FaultReport batch_visit_responses(const Batch& b, Arm arm, int threads, const ResponseVisitor& visit) {
  const Vocab v(b.rows, b.cols);
  const std::vector<uint32_t> xy = cell_coord_table(v);
  // One buffer per worker, reused from example to example: it stays in cache between the write and the visit.
  std::vector<std::vector<uint16_t>> buffers(static_cast<size_t>(resolve_threads(threads, b.n)));
  return run_checked(b, threads, [&](int64_t i, int worker) {
    int64_t w = 0;
    const Fault f = check_example(b, i, arm, true, &w);
    if (f != Fault::none) return f;
    const int64_t length = response_length(ops_count(b, i), plan_count(b, i), arm);
    std::vector<uint16_t>& buf = buffers[static_cast<size_t>(worker)];
    // write_response's 8-byte stores may reach 3 tokens past its end.
    if (static_cast<int64_t>(buf.size()) < length + 4) buf.resize(static_cast<size_t>(length + 4));
    write_response(buf.data(), example_at(b, i), v, xy.data(), arm);
    visit(i, buf.data(), length, worker);
    return Fault::none;
  });
}

int64_t batch_text_lengths(const uint16_t* tokens, const int64_t* offsets, int64_t n, const WordTable& w,
                           int threads, int64_t* text_lengths) {
  std::atomic<int64_t> first{n};
  parallel_chunks(n, CHUNK, threads, [&](int64_t begin, int64_t end, int) {
    if (begin > first.load(std::memory_order_relaxed)) return;
    for (int64_t i = begin; i < end; ++i) {
      text_lengths[i] = text_length(tokens + offsets[i], offsets[i + 1] - offsets[i], w);
      if (text_lengths[i] < 0) {
        record_fault(first, i);
        return;
      }
    }
  });
  return first.load();
}

void batch_render(const uint16_t* tokens, const int64_t* offsets, int64_t n, const WordTable& w,
                  const int64_t* text_offsets, char* text, int threads) {
  parallel_chunks(n, CHUNK, threads, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i)
      write_text(text + text_offsets[i], text_offsets[i + 1] - text_offsets[i], tokens + offsets[i],
                 offsets[i + 1] - offsets[i], w);
  });
}

}  // namespace reasonless::tokens
