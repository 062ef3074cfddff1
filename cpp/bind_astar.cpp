// Python bindings of A*: astar_batch over many mazes (parallel, GIL released) and astar for one.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "astar.hpp"
#include "parallel.hpp"

namespace py = pybind11;

namespace reasonless {
namespace {

using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
using I64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// Integer or bool arrays only: silently truncating floats would hide caller bugs.
py::array as_integer_array(const py::object& obj, const char* name) {
  py::array a = py::array::ensure(obj);
  if (!a) throw py::value_error(std::string(name) + " must be array-like");
  const char kind = a.dtype().kind();
  if (kind != 'b' && kind != 'i' && kind != 'u')
    throw py::value_error(std::string(name) + " must hold integers, got dtype " + std::string(py::str(a.dtype())));
  return a;
}

TiePolicy policy_from(const std::string& name) {
  TiePolicy p;
  if (!parse_tie_policy(name, &p))
    throw py::value_error("unknown A* tie policy '" + name + "'; choose one of " + tie_policy_list());
  return p;
}

void check_side(const char* name, int side) {
  if (side < 4 || side > 64)
    throw py::value_error(std::string(name) + "=" + std::to_string(side) + ": grid sides must be integers from 4 to 64");
}

// Walls as uint8 (N, rows*cols) holding only 0 and 1.
U8Array load_walls(const py::object& obj, int rows, int cols) {
  py::array raw = as_integer_array(obj, "walls");
  const py::ssize_t cells = static_cast<py::ssize_t>(rows) * cols;
  if (raw.ndim() != 2 || raw.shape(1) != cells)
    throw py::value_error("walls must have shape (N, rows*cols) = (N, " + std::to_string(cells) + "), got " +
                          shape_str(raw));
  const py::ssize_t n = raw.shape(0);
  auto report = [&](py::ssize_t flat, int64_t value) {
    throw py::value_error("example " + std::to_string(flat / cells) + ": walls must be 0 (free) or 1 (wall), found " +
                          std::to_string(value) + " at cell " + std::to_string(flat % cells));
  };
  // Check before narrowing so that e.g. 256 cannot wrap to a free cell.
  if (raw.dtype().kind() != 'b' && raw.dtype().itemsize() != 1) {
    I64Array wide(raw);
    const int64_t* w = wide.data();
    for (py::ssize_t i = 0; i < n * cells; ++i)
      if (static_cast<uint64_t>(w[i]) > 1) report(i, w[i]);
    return U8Array(raw);
  }
  U8Array walls(raw);
  const uint8_t* w = walls.data();
  uint8_t high_bits = 0;  // a branch-free pass vectorises; the slow search runs only on bad input
  for (py::ssize_t i = 0; i < n * cells; ++i) high_bits |= w[i] & 0xFE;
  if (high_bits)
    for (py::ssize_t i = 0; i < n * cells; ++i)
      if (w[i] > 1) report(i, raw.dtype().kind() == 'i' ? static_cast<int8_t>(w[i]) : w[i]);
  return walls;
}

// (N, 2) of (x, y) → cell indices, after checking each lies on a free cell.
std::vector<int> load_cells(const py::object& obj, const char* name, py::ssize_t n, int rows, int cols,
                            const uint8_t* walls) {
  I64Array a(as_integer_array(obj, name));
  if (a.ndim() != 2 || a.shape(0) != n || a.shape(1) != 2)
    throw py::value_error(std::string(name) + " must have shape (N, 2) = (" + std::to_string(n) + ", 2), got " +
                          shape_str(a));
  const int64_t* p = a.data();
  std::vector<int> cells(static_cast<size_t>(n));
  for (py::ssize_t i = 0; i < n; ++i) {
    const int64_t x = p[2 * i], y = p[2 * i + 1];
    auto where = [&] {
      return "example " + std::to_string(i) + ": " + name + " (" + std::to_string(x) + ", " + std::to_string(y) + ")";
    };
    if (x < 0 || x >= cols || y < 0 || y >= rows)
      throw py::value_error(where() + " is outside the grid of " + std::to_string(rows) + " rows and " +
                            std::to_string(cols) + " columns (x in 0.." + std::to_string(cols - 1) + ", y in 0.." +
                            std::to_string(rows - 1) + ")");
    const int c = static_cast<int>(y * cols + x);
    if (walls[i * static_cast<py::ssize_t>(rows) * cols + c]) throw py::value_error(where() + " is a wall");
    cells[static_cast<size_t>(i)] = c;
  }
  return cells;
}

uint64_t seed_bits(const py::object& seed) {
  // Any Python int: its low 64 bits (two's complement), so negative seeds work too.
  py::int_ s(seed);
  const unsigned long long v = PyLong_AsUnsignedLongLongMask(s.ptr());
  if (PyErr_Occurred()) throw py::error_already_set();
  return static_cast<uint64_t>(v);
}

// Append-only storage in fixed blocks: growing never moves or re-touches what was written, which
// matters because fresh pages cost about as much as the search itself.
class BlockArena {
 public:
  explicit BlockArena(size_t block) : block_(block) {}
  // Contiguous room for k more values; commit() keeps the part that was used.
  uint16_t* room(size_t k) {
    if (blocks_.empty() || used_ + k > cap_) {
      cap_ = std::max(block_, k);
      blocks_.emplace_back(new uint16_t[cap_]);
      used_ = 0;
    }
    return blocks_.back().get() + used_;
  }
  void commit(size_t k) { used_ += k; }

 private:
  std::vector<std::unique_ptr<uint16_t[]>> blocks_;
  size_t block_, used_ = 0, cap_ = 0;
};

struct WorkerState {
  std::unique_ptr<AStarSolver> solver;
  BlockArena ops{size_t{1} << 20}, plan{size_t{1} << 18};
};

// Copies per-example pieces into one array in example order, merging pieces that are adjacent.
void gather(uint16_t* dst, const std::vector<const uint16_t*>& src, const std::vector<int64_t>& sizes) {
  const uint16_t* run = nullptr;
  size_t run_len = 0;
  for (size_t i = 0; i < src.size(); ++i) {
    const size_t len = static_cast<size_t>(sizes[i]);
    if (run && src[i] == run + run_len) {
      run_len += len;
      continue;
    }
    if (run_len) std::memcpy(dst, run, run_len * sizeof(uint16_t));
    dst += run_len;
    run = src[i];
    run_len = len;
  }
  if (run_len) std::memcpy(dst, run, run_len * sizeof(uint16_t));
}

// Solves every example; results are concatenated in example order so they do not depend on threads.
py::tuple solve_batch(const uint8_t* walls, py::ssize_t n, int rows, int cols, const std::vector<int>& starts,
                      const std::vector<int>& goals, TiePolicy policy, uint64_t seed, const int64_t* instance_ids,
                      int threads) {
  const int64_t cells = int64_t{rows} * cols;
  const size_t max_ops = size_t{3} * max_trace_ops(static_cast<int>(cells));
  // Small chunks balance threads (solve times vary a lot between mazes).
  const int64_t chunk = 64;
  const int64_t n_chunks = (n + chunk - 1) / chunk;
  const size_t un = static_cast<size_t>(n);
  std::vector<const uint16_t*> ops_src(un), plan_src(un);
  std::vector<int64_t> ops_len(un), plan_len(un);  // in uint16 values
  std::vector<WorkerState> workers(static_cast<size_t>(resolve_threads(threads, n_chunks)));
  {
    py::gil_scoped_release release;
    parallel_chunks(n, chunk, threads, [&](int64_t begin, int64_t end, int worker) {
      WorkerState& w = workers[static_cast<size_t>(worker)];
      if (!w.solver) w.solver = std::make_unique<AStarSolver>();
      GridView grid{rows, cols, nullptr};
      for (int64_t i = begin; i < end; ++i) {
        grid.walls = walls + i * cells;
        const uint64_t rng = policy == TiePolicy::kRandom
                                 ? example_rng_state(seed, instance_ids ? instance_ids[i] : i)
                                 : 0;
        uint16_t* ops = w.ops.room(max_ops);
        uint16_t* plan = w.plan.room(static_cast<size_t>(cells));
        const AStarResult r = w.solver->solve(grid, starts[static_cast<size_t>(i)], goals[static_cast<size_t>(i)],
                                              policy, rng, ops, plan);
        w.ops.commit(size_t{3} * r.n_ops);
        w.plan.commit(static_cast<size_t>(r.n_plan));
        const size_t k = static_cast<size_t>(i);
        ops_src[k] = ops;
        plan_src[k] = plan;
        ops_len[k] = int64_t{3} * r.n_ops;
        plan_len[k] = r.n_plan;
      }
    });
  }
  py::array_t<int64_t> ops_offsets(n + 1), plan_offsets(n + 1);
  int64_t* oo = ops_offsets.mutable_data();
  int64_t* po = plan_offsets.mutable_data();
  oo[0] = po[0] = 0;
  for (size_t i = 0; i < un; ++i) {
    oo[i + 1] = oo[i] + ops_len[i] / 3;
    po[i + 1] = po[i] + plan_len[i];
  }
  py::array_t<uint16_t> ops({static_cast<py::ssize_t>(oo[n]), py::ssize_t{3}});
  py::array_t<uint16_t> plan(static_cast<py::ssize_t>(po[n]));
  uint16_t* ops_dst = ops.mutable_data();
  uint16_t* plan_dst = plan.mutable_data();
  {
    py::gil_scoped_release release;
    gather(ops_dst, ops_src, ops_len);
    gather(plan_dst, plan_src, plan_len);
  }
  return py::make_tuple(ops, ops_offsets, plan, plan_offsets);
}

py::tuple astar_batch(const py::object& walls_obj, int rows, int cols, const py::object& start_obj,
                      const py::object& goal_obj, const std::string& policy_name, const py::object& seed_obj,
                      const py::object& instance_ids_obj, int threads) {
  const TiePolicy policy = policy_from(policy_name);
  check_side("rows", rows);
  check_side("cols", cols);
  const uint64_t seed = seed_bits(seed_obj);
  U8Array walls = load_walls(walls_obj, rows, cols);
  const py::ssize_t n = walls.shape(0);
  const std::vector<int> starts = load_cells(start_obj, "start", n, rows, cols, walls.data());
  const std::vector<int> goals = load_cells(goal_obj, "goal", n, rows, cols, walls.data());
  I64Array ids;
  if (!instance_ids_obj.is_none()) {
    ids = I64Array(as_integer_array(instance_ids_obj, "instance_ids"));
    if (ids.ndim() != 1 || ids.shape(0) != n)
      throw py::value_error("instance_ids must have shape (N,) = (" + std::to_string(n) + ",), got " + shape_str(ids));
  }
  return solve_batch(walls.data(), n, rows, cols, starts, goals, policy, seed,
                     instance_ids_obj.is_none() ? nullptr : ids.data(), threads);
}

py::tuple astar_one(const py::object& walls_obj, const py::object& start_obj, const py::object& goal_obj,
                    const std::string& policy_name, const py::object& seed_obj) {
  py::array raw = as_integer_array(walls_obj, "walls");
  if (raw.ndim() != 2) throw py::value_error("walls must have shape (rows, cols), got " + shape_str(raw));
  const int rows = static_cast<int>(raw.shape(0)), cols = static_cast<int>(raw.shape(1));
  check_side("rows", rows);
  check_side("cols", cols);
  py::array flat = raw.attr("reshape")(1, rows * cols);
  auto as_pair = [](const py::object& p, const char* name) {
    py::array a = as_integer_array(p, name);
    if (a.size() != 2) throw py::value_error(std::string(name) + " must be (x, y), got shape " + shape_str(a));
    return a.attr("reshape")(1, 2);
  };
  py::tuple r = astar_batch(flat, rows, cols, as_pair(start_obj, "start"), as_pair(goal_obj, "goal"), policy_name,
                            seed_obj, py::none(), 1);
  return py::make_tuple(r[0], r[2]);
}

}  // namespace
}  // namespace reasonless

void bind_astar(py::module_& m) {
  using namespace reasonless;
  py::tuple names(kNumTiePolicies);
  for (int i = 0; i < kNumTiePolicies; ++i) names[i] = py::str(kTiePolicyNames[i]);
  m.attr("ASTAR_POLICIES") = names;

  m.def("astar_batch", &astar_batch, py::arg("walls"), py::arg("rows"), py::arg("cols"), py::arg("start"),
        py::arg("goal"), py::arg("policy") = "fifo", py::arg("seed") = 0, py::arg("instance_ids") = py::none(),
        py::arg("threads") = 0,
        R"doc(Solve N mazes with A* (4-connected, unit cost, Manhattan heuristic) and record the traces.

walls: uint8 (N, rows*cols), 1 = wall; start, goal: int (N, 2) as (x, y) on free cells.
policy: tie-break among equal f, one of ASTAR_POLICIES ("fifo" reproduces the paper's datasets).
seed, instance_ids (default arange(N)): seed the "random" policy per example, so results do not
depend on batching; other policies ignore them. threads <= 0 uses every core; results are the
same for any thread count.

Returns (ops uint16 (M, 3), ops_offsets int64 (N+1,), plan uint16 (P,), plan_offsets int64 (N+1,)).
An op row is (cell | 0x8000 for close, g, h), cell = y*cols + x. Unsolvable mazes get an empty plan.)doc");

  m.def("astar", &astar_one, py::arg("walls"), py::arg("start"), py::arg("goal"), py::arg("policy") = "fifo",
        py::arg("seed") = 0,
        R"doc(A* on one maze: walls uint8 (rows, cols), start and goal (x, y).

Returns (ops uint16 (M, 3), plan uint16 (P,)) as astar_batch does for a single example with
instance id 0.)doc");
}
