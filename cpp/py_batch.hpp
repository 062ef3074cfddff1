// A batch of examples in the corpus layout (walls, start, goal, ops, plan and their offsets) taken from Python
// arrays, shared by the bindings that tokenize it and that verify it: dtypes and shapes checked once here, the
// values by tokens::check_example in the loops.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "tokens.hpp"

namespace reasonless::tokens {

namespace py = pybind11;

inline std::string dtype_name(const py::dtype& d) { return py::str(d).cast<std::string>(); }

// A C-contiguous view of `obj`, which must already be a numpy array of exactly T with `ndim` dimensions.
// Non-contiguous input is copied; a wrong dtype is an error rather than a silent cast (a cast would hide
// mistakes such as int64 cells, and cost a copy of the corpus).
template <class T>
inline py::array_t<T, py::array::c_style> input(const py::object& obj, const char* name, int ndim) {
  const std::string want = dtype_name(py::dtype::of<T>());
  if (!py::isinstance<py::array>(obj))
    throw py::value_error(std::string(name) + " must be a numpy " + want + " array, got " +
                          py::str(py::type::of(obj)).cast<std::string>());
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!py::isinstance<py::array_t<T>>(arr))
    throw py::value_error(std::string(name) + " must have dtype " + want + ", got " + dtype_name(arr.dtype()));
  if (arr.ndim() != ndim)
    throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) + " dimension(s), got " +
                          std::to_string(arr.ndim()));
  return py::array_t<T, py::array::c_style>::ensure(arr);
}

inline void check_grid(int rows, int cols) {
  for (auto [name, side] : {std::pair<const char*, int>{"rows", rows}, {"cols", cols}})
    if (side < MIN_SIDE || side > MAX_SIDE)
      throw py::value_error(std::string(name) + "=" + std::to_string(side) + ": grid sides must be integers from " +
                            std::to_string(MIN_SIDE) + " to " + std::to_string(MAX_SIDE));
}

inline Arm parse_arm(const std::string& arm) {
  if (arm == "correct") return Arm::correct;
  if (arm == "none") return Arm::none;
  if (arm == "no_costs") return Arm::no_costs;
  throw py::value_error("token layout must be 'correct', 'none' or 'no_costs', got '" + arm + "'");
}

inline void check_shape(const py::array& a, const char* name, py::ssize_t dim, py::ssize_t want, const std::string& why) {
  if (a.shape(dim) != want)
    throw py::value_error(std::string(name) + ".shape[" + std::to_string(dim) + "] = " + std::to_string(a.shape(dim)) +
                          ", expected " + std::to_string(want) + " (" + why + ")");
}

// Arrays of a batch kept alive (and contiguous) while the GIL is released, plus the raw view of them.
struct BatchArrays {
  py::array_t<uint8_t, py::array::c_style> walls;
  py::array_t<int32_t, py::array::c_style> start, goal;
  py::array_t<uint16_t, py::array::c_style> ops, plan;
  py::array_t<int64_t, py::array::c_style> ops_offsets, plan_offsets;
  Batch b;
};

inline void load_common(BatchArrays& a, const py::object& walls, int rows, int cols, const py::object& ops_offsets,
                 const py::object& plan_offsets) {
  check_grid(rows, cols);
  a.walls = input<uint8_t>(walls, "walls", 2);
  const int64_t n = a.walls.shape(0);
  check_shape(a.walls, "walls", 1, int64_t{rows} * cols, "rows*cols = " + std::to_string(rows) + "*" + std::to_string(cols));
  a.ops_offsets = input<int64_t>(ops_offsets, "ops_offsets", 1);
  check_shape(a.ops_offsets, "ops_offsets", 0, n + 1, "number of examples + 1");
  a.plan_offsets = input<int64_t>(plan_offsets, "plan_offsets", 1);
  check_shape(a.plan_offsets, "plan_offsets", 0, n + 1, "number of examples + 1");
  a.b.rows = rows;
  a.b.cols = cols;
  a.b.n = n;
  a.b.walls = a.walls.data();
  a.b.ops_offsets = a.ops_offsets.data();
  a.b.plan_offsets = a.plan_offsets.data();
}

// Everything a sequence needs: the common arrays plus start, goal (int32 (N, 2)), ops (uint16 (M, 3)), plan.
inline void load_examples(BatchArrays& a, const py::object& walls, int rows, int cols, const py::object& start,
                          const py::object& goal, const py::object& ops, const py::object& ops_offsets,
                          const py::object& plan, const py::object& plan_offsets) {
  load_common(a, walls, rows, cols, ops_offsets, plan_offsets);
  const int64_t n = a.b.n;
  a.start = input<int32_t>(start, "start", 2);
  check_shape(a.start, "start", 0, n, "one row per maze in walls");
  check_shape(a.start, "start", 1, 2, "(x, y)");
  a.goal = input<int32_t>(goal, "goal", 2);
  check_shape(a.goal, "goal", 0, n, "one row per maze in walls");
  check_shape(a.goal, "goal", 1, 2, "(x, y)");
  a.ops = input<uint16_t>(ops, "ops", 2);
  check_shape(a.ops, "ops", 1, 3, "(cell|0x8000 for close, g, h)");
  a.plan = input<uint16_t>(plan, "plan", 1);
  a.b.start = a.start.data();
  a.b.goal = a.goal.data();
  a.b.ops = a.ops.data();
  a.b.n_op_rows = a.ops.shape(0);
  a.b.plan = a.plan.data();
  a.b.n_plan_cells = a.plan.shape(0);
}

}  // namespace reasonless::tokens
