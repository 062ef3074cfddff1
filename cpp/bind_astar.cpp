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
#include "py_inputs.hpp"

namespace py = pybind11;

namespace reasonless {
namespace {

TiePolicy policy_from(const std::string& name) {
  TiePolicy p;
  if (!parse_tie_policy(name, &p))
    throw py::value_error("unknown A* tie policy '" + name + "'; choose one of " + tie_policy_list());
  return p;
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
  m.attr("ASTAR_POLICIES") = name_tuple(kTiePolicyNames);

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
