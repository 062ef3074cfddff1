// Python binding of the per-example training arms: arm_ops_batch (parallel, GIL released).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "arms.hpp"
#include "parallel.hpp"
#include "py_inputs.hpp"

namespace py = pybind11;

namespace reasonless {
namespace {

py::tuple arm_ops_batch(const std::string& arm_name, const py::object& walls_obj, int rows, int cols,
                        const py::object& start_obj, const py::object& goal_obj, const py::object& ops_obj,
                        const py::object& offsets_obj, const py::object& ids_obj, const py::object& seed_obj,
                        int threads) {
  ArmKind arm;
  if (!parse_arm_kind(arm_name, &arm))
    throw py::value_error("arm_ops_batch: unknown arm '" + arm_name + "'; choose one of " + arm_kind_list());
  check_side("rows", rows);
  check_side("cols", cols);
  const uint64_t seed = seed_bits(seed_obj);
  const U8Array walls = load_walls(walls_obj, rows, cols);
  const py::ssize_t n = walls.shape(0);
  const std::vector<int> starts = load_cells(start_obj, "start", n, rows, cols, walls.data());
  const std::vector<int> goals = load_cells(goal_obj, "goal", n, rows, cols, walls.data());

  py::array ops_raw = as_integer_array(ops_obj, "ops");
  if (ops_raw.ndim() != 2 || ops_raw.shape(1) != 3)
    throw py::value_error("ops must have shape (M, 3), got " + shape_str(ops_raw));
  if (!py::isinstance<py::array_t<uint16_t>>(ops_raw))
    throw py::value_error("ops must have dtype uint16 (the corpus op layout), got " +
                          std::string(py::str(ops_raw.dtype())));
  const U16Array ops(ops_raw);
  const int64_t m = ops.shape(0);
  const I64Array offsets(as_integer_array(offsets_obj, "ops_offsets"));
  if (offsets.ndim() != 1 || offsets.shape(0) != n + 1)
    throw py::value_error("ops_offsets must have shape (N+1,) = (" + std::to_string(n + 1) + ",), got " +
                          shape_str(offsets));
  const int64_t* oo = offsets.data();
  for (py::ssize_t i = 0; i < n; ++i)
    if (oo[i] < 0 || oo[i + 1] < oo[i] || oo[i + 1] > m)
      throw py::value_error("example " + std::to_string(i) + ": ops_offsets[" + std::to_string(i) + ":" +
                            std::to_string(i + 2) + "] = (" + std::to_string(oo[i]) + ", " +
                            std::to_string(oo[i + 1]) + ") is not a span of the " + std::to_string(m) + " ops rows");
  const I64Array ids(as_integer_array(ids_obj, "instance_ids"));
  if (ids.ndim() != 1 || ids.shape(0) != n)
    throw py::value_error("instance_ids must have shape (N,) = (" + std::to_string(n) + ",), got " + shape_str(ids));

  const int64_t cells = int64_t{rows} * cols;
  const uint8_t* w = walls.data();
  const uint16_t* own = ops.data();
  const int64_t* id = ids.data();
  const int64_t chunk = 64;
  const int64_t n_chunks = (n + chunk - 1) / chunk;
  std::vector<std::unique_ptr<ArmWorkspace>> spaces(static_cast<size_t>(resolve_threads(threads, n_chunks)));
  auto workspace = [&](int worker) -> ArmWorkspace& {
    auto& s = spaces[static_cast<size_t>(worker)];
    if (!s) s = std::make_unique<ArmWorkspace>();
    return *s;
  };
  auto one = [&](int64_t i, ArmWorkspace& ws, uint16_t* dst) {
    const GridView grid{rows, cols, w + i * cells};
    return arm_ops(arm, grid, starts[static_cast<size_t>(i)], goals[static_cast<size_t>(i)], own + 3 * oo[i],
                   oo[i + 1] - oo[i], arm_rng_state(seed, arm, id[i]), ws, dst);
  };

  py::array_t<int64_t> out_offsets(n + 1);
  int64_t* no = out_offsets.mutable_data();
  no[0] = 0;
  if (arm_keeps_length(arm)) {
    for (py::ssize_t i = 0; i < n; ++i) no[i + 1] = no[i] + (oo[i + 1] - oo[i]);
    py::array_t<uint16_t> out({static_cast<py::ssize_t>(no[n]), py::ssize_t{3}});
    uint16_t* dst = out.mutable_data();
    {
      py::gil_scoped_release release;
      parallel_chunks(n, chunk, threads, [&](int64_t begin, int64_t end, int worker) {
        ArmWorkspace& ws = workspace(worker);
        for (int64_t i = begin; i < end; ++i) one(i, ws, dst + 3 * no[i]);
      });
    }
    return py::make_tuple(out, out_offsets);
  }

  // Lengths are known only after the search: each chunk fills its own buffer, then one copy in order.
  std::vector<std::vector<uint16_t>> chunk_ops(static_cast<size_t>(n_chunks));
  std::vector<int64_t> lengths(static_cast<size_t>(n));
  const size_t room = size_t{3} * max_trace_ops(static_cast<int>(cells));
  {
    py::gil_scoped_release release;
    parallel_chunks(n, chunk, threads, [&](int64_t begin, int64_t end, int worker) {
      ArmWorkspace& ws = workspace(worker);
      std::vector<uint16_t>& buf = chunk_ops[static_cast<size_t>(begin / chunk)];
      // Searches write to the worker's scratch (room for the longest trace), then only what they
      // wrote is appended: no per-example fill of the worst-case size.
      if (ws.scratch.size() < room) ws.scratch.resize(room);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t k = one(i, ws, ws.scratch.data());
        buf.insert(buf.end(), ws.scratch.data(), ws.scratch.data() + 3 * k);
        lengths[static_cast<size_t>(i)] = k;
      }
    });
  }
  for (py::ssize_t i = 0; i < n; ++i) no[i + 1] = no[i] + lengths[static_cast<size_t>(i)];
  py::array_t<uint16_t> out({static_cast<py::ssize_t>(no[n]), py::ssize_t{3}});
  uint16_t* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    parallel_chunks(n_chunks, 1, threads, [&](int64_t begin, int64_t end, int) {
      for (int64_t c = begin; c < end; ++c) {
        const auto& buf = chunk_ops[static_cast<size_t>(c)];
        if (!buf.empty()) std::memcpy(dst + 3 * no[c * chunk], buf.data(), buf.size() * sizeof(uint16_t));
      }
    });
  }
  return py::make_tuple(out, out_offsets);
}

// dst[dst_begin[k] + r] = src[src_begin[k] + r] for r < counts[k]: the gather behind the swapped arm,
// one call per source shard (src may be a read-only memory map; nothing is copied to pass it in).
void copy_op_spans(const py::array& src_obj, const py::object& src_begin_obj, const py::object& counts_obj,
                   const py::array& dst_obj, const py::object& dst_begin_obj) {
  auto check_ops = [](const py::array& a, const char* name, bool writable) {
    if (!py::isinstance<py::array_t<uint16_t>>(a) || a.ndim() != 2 || a.shape(1) != 3 ||
        !(a.flags() & py::array::c_style))
      throw py::value_error(std::string(name) + " must be a C-contiguous uint16 (M, 3) array, got dtype " +
                            std::string(py::str(a.dtype())) + " shape " + shape_str(a));
    if (writable && !a.writeable()) throw py::value_error(std::string(name) + " must be writable");
  };
  check_ops(src_obj, "src", false);
  check_ops(dst_obj, "dst", true);
  const I64Array sb(as_integer_array(src_begin_obj, "src_begin")), cnt(as_integer_array(counts_obj, "counts")),
      db(as_integer_array(dst_begin_obj, "dst_begin"));
  const py::ssize_t k = sb.size();
  if (sb.ndim() != 1 || cnt.ndim() != 1 || db.ndim() != 1 || cnt.size() != k || db.size() != k)
    throw py::value_error("src_begin, counts and dst_begin must be 1-D of one length");
  const int64_t m_src = src_obj.shape(0), m_dst = dst_obj.shape(0);
  const int64_t *s = sb.data(), *c = cnt.data(), *d = db.data();
  for (py::ssize_t i = 0; i < k; ++i)
    if (c[i] < 0 || s[i] < 0 || d[i] < 0 || s[i] > m_src - c[i] || d[i] > m_dst - c[i])
      throw py::value_error("span " + std::to_string(i) + ": " + std::to_string(c[i]) + " rows from " +
                            std::to_string(s[i]) + " to " + std::to_string(d[i]) + " leave src (" +
                            std::to_string(m_src) + " rows) or dst (" + std::to_string(m_dst) + " rows)");
  const uint16_t* src = static_cast<const uint16_t*>(src_obj.data());
  uint16_t* dst = static_cast<uint16_t*>(py::array(dst_obj).mutable_data());
  py::gil_scoped_release release;
  for (py::ssize_t i = 0; i < k; ++i)
    std::memcpy(dst + 3 * d[i], src + 3 * s[i], static_cast<size_t>(c[i]) * 3 * sizeof(uint16_t));
}

}  // namespace
}  // namespace reasonless

void bind_arms(py::module_& m) {
  using namespace reasonless;
  m.attr("ARM_OPS_ARMS") = name_tuple(kArmKindNames);
  m.attr("SEARCH_ALGORITHMS") = name_tuple(kSearchAlgorithmNames);

  m.def("arm_ops_batch", &arm_ops_batch, py::arg("arm"), py::arg("walls"), py::arg("rows"), py::arg("cols"),
        py::arg("start"), py::arg("goal"), py::arg("ops"), py::arg("ops_offsets"), py::arg("instance_ids"),
        py::arg("seed") = 0, py::arg("threads") = 0,
        R"doc(The trace of a training arm for N examples, in the corpus op layout (see reasonless/arms.py).

arm: one of ARM_OPS_ARMS (shuffled, reversed, noise, other_algorithm:bfs|dfs|greedy|dijkstra).
walls: uint8 (N, rows*cols) of 0/1; start, goal: int (N, 2) as (x, y) on free cells; ops: uint16 (M, 3)
and ops_offsets: int64 (N+1,), the examples' own A* traces (spans may start above 0); instance_ids:
int64 (N,), the corpus index of each example, which with seed and arm alone seeds its randomness, so
the result does not depend on batching or threads (<= 0: every core).

Returns (ops uint16 (M', 3), ops_offsets int64 (N+1,)) starting at 0.)doc");

  m.def("copy_op_spans", &copy_op_spans, py::arg("src"), py::arg("src_begin"), py::arg("counts"), py::arg("dst"),
        py::arg("dst_begin"),
        R"doc(dst[dst_begin[k] + r] = src[src_begin[k] + r] for r < counts[k], over uint16 (M, 3) op arrays
(src may be a read-only memory map). Spans are bounds-checked first; ValueError names a bad one.)doc");
}
