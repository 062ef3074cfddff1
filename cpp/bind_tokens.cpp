// Python bindings of the tokenizer: token_lengths, tokenize_into, render_text (reasonless._core).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "tokens.hpp"

namespace py = pybind11;
using namespace reasonless::tokens;

namespace {

std::string dtype_name(const py::dtype& d) { return py::str(d).cast<std::string>(); }

// A C-contiguous view of `obj`, which must already be a numpy array of exactly T with `ndim` dimensions.
// Non-contiguous input is copied; a wrong dtype is an error rather than a silent cast (a cast would hide
// mistakes such as int64 cells, and cost a copy of the corpus).
template <class T>
py::array_t<T, py::array::c_style> input(const py::object& obj, const char* name, int ndim) {
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

void check_grid(int rows, int cols) {
  for (auto [name, side] : {std::pair<const char*, int>{"rows", rows}, {"cols", cols}})
    if (side < MIN_SIDE || side > MAX_SIDE)
      throw py::value_error(std::string(name) + "=" + std::to_string(side) + ": grid sides must be integers from " +
                            std::to_string(MIN_SIDE) + " to " + std::to_string(MAX_SIDE));
}

Arm parse_arm(const std::string& arm) {
  if (arm == "correct") return Arm::correct;
  if (arm == "none") return Arm::none;
  if (arm == "no_costs") return Arm::no_costs;
  throw py::value_error("token layout must be 'correct', 'none' or 'no_costs', got '" + arm + "'");
}

void check_shape(const py::array& a, const char* name, py::ssize_t dim, py::ssize_t want, const std::string& why) {
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

void load_common(BatchArrays& a, const py::object& walls, int rows, int cols, const py::object& ops_offsets,
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

py::tuple token_lengths(const py::object& walls, int rows, int cols, const py::object& ops_offsets,
                        const py::object& plan_offsets, const std::string& arm_name, int threads) {
  const Arm arm = parse_arm(arm_name);
  BatchArrays a;
  load_common(a, walls, rows, cols, ops_offsets, plan_offsets);
  py::array_t<int64_t> lengths(a.b.n);
  py::array_t<int32_t> prompts(a.b.n);
  FaultReport r;
  {
    py::gil_scoped_release release;
    r = batch_lengths(a.b, arm, threads, lengths.mutable_data(), prompts.mutable_data());
  }
  if (r.example < a.b.n) throw py::value_error(describe(a.b, r, arm, nullptr, 0));
  return py::make_tuple(lengths, prompts);
}

void tokenize_into(const py::object& walls, int rows, int cols, const py::object& start, const py::object& goal,
                   const py::object& ops, const py::object& ops_offsets, const py::object& plan,
                   const py::object& plan_offsets, const py::object& out, const py::object& out_offsets,
                   const std::string& arm_name, int threads) {
  const Arm arm = parse_arm(arm_name);
  BatchArrays a;
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

  // out is written in place, so no copy may stand in for it.
  if (!py::isinstance<py::array_t<uint16_t>>(out))
    throw py::value_error("out must be a numpy uint16 array" +
                          (py::isinstance<py::array>(out)
                               ? ", got dtype " + dtype_name(py::reinterpret_borrow<py::array>(out).dtype())
                               : std::string()));
  auto out_arr = py::reinterpret_borrow<py::array_t<uint16_t>>(out);
  if (out_arr.ndim() != 1) throw py::value_error("out must be 1-dimensional");
  if (!(out_arr.flags() & py::array::c_style)) throw py::value_error("out must be contiguous");
  if (!out_arr.writeable()) throw py::value_error("out must be writable");
  auto oo = input<int64_t>(out_offsets, "out_offsets", 1);
  check_shape(oo, "out_offsets", 0, n + 1, "number of examples + 1");

  uint16_t* out_ptr = out_arr.mutable_data();
  const int64_t out_size = out_arr.shape(0);
  FaultReport r;
  {
    py::gil_scoped_release release;
    r = batch_tokenize(a.b, arm, out_ptr, out_size, oo.data(), threads);
  }
  if (r.example < n) throw py::value_error(describe(a.b, r, arm, oo.data(), out_size));
}

py::tuple render_text(const py::object& tokens, const py::object& offsets, int rows, int cols, int threads) {
  check_grid(rows, cols);
  auto tok = input<uint16_t>(tokens, "tokens", 1);
  auto off = input<int64_t>(offsets, "offsets", 1);
  if (off.shape(0) < 1) throw py::value_error("offsets must hold at least one entry (N + 1 for N sequences)");
  const int64_t n = off.shape(0) - 1, size = tok.shape(0);
  const int64_t* o = off.data();
  for (int64_t i = 0; i <= n; ++i) {
    if (o[i] < 0 || o[i] > size || (i > 0 && o[i] < o[i - 1]))
      throw py::value_error("offsets[" + std::to_string(i) + "] = " + std::to_string(o[i]) +
                            ": offsets must be non-decreasing within [0, " + std::to_string(size) + "]");
  }
  const Vocab v(rows, cols);
  const WordTable words(v);
  py::array_t<int64_t> text_offsets(n + 1);
  int64_t* to = text_offsets.mutable_data();
  to[0] = 0;
  int64_t bad;
  {
    py::gil_scoped_release release;
    bad = batch_text_lengths(tok.data(), o, n, words, threads, to + 1);
  }
  if (bad < n) {
    int64_t k = o[bad];
    while (tok.data()[k] < words.size) ++k;
    throw py::value_error("sequence " + std::to_string(bad) + ": token id " + std::to_string(tok.data()[k]) +
                          " at position " + std::to_string(k - o[bad]) + " is outside the " +
                          std::to_string(words.size) + "-token vocabulary of a " + std::to_string(rows) + "x" +
                          std::to_string(cols) + " grid");
  }
  for (int64_t i = 0; i < n; ++i) to[i + 1] += to[i];
  py::array_t<uint8_t> text(to[n]);
  char* text_ptr = reinterpret_cast<char*>(text.mutable_data());
  {
    py::gil_scoped_release release;
    batch_render(tok.data(), o, n, words, to, text_ptr, threads);
  }
  return py::make_tuple(text, text_offsets);
}

}  // namespace

void bind_tokens(py::module_& m) {
  m.def("token_lengths", &token_lengths, py::arg("walls"), py::arg("rows"), py::arg("cols"), py::arg("ops_offsets"),
        py::arg("plan_offsets"), py::arg("arm") = "correct", py::arg("threads") = 0,
        R"doc(Token counts of the training sequences of a batch (DESIGN §4).

Returns (lengths int64[N], prompt_lengths int32[N]) for
<|bos|> query start X Y goal X Y wall X Y ... reasoning [ops] solution plan X Y ... end <|eos|>;
the prompt is every token before `reasoning`, <|bos|> included. arm "correct" puts the example's own
ops after `reasoning`, arm "none" none. walls: uint8[N, rows*cols] of 0/1; ops_offsets, plan_offsets:
int64[N+1], non-decreasing. threads <= 0 uses every core. Raises ValueError naming the first bad example.)doc");
  m.def("tokenize_into", &tokenize_into, py::arg("walls"), py::arg("rows"), py::arg("cols"), py::arg("start"),
        py::arg("goal"), py::arg("ops"), py::arg("ops_offsets"), py::arg("plan"), py::arg("plan_offsets"),
        py::arg("out"), py::arg("out_offsets"), py::arg("arm") = "correct", py::arg("threads") = 0,
        R"doc(Writes each example's training sequence to out[out_offsets[i]:out_offsets[i+1]].

start, goal: int32[N, 2] (x, y); ops: uint16[M, 3] (cell | 0x8000 for close, g, h); plan: uint16[P] cells;
ops_offsets / plan_offsets: int64[N+1] indexing ops rows / plan as given (they may start above 0);
out: writable contiguous uint16[T] (a memory map works); out_offsets: int64[N+1] whose spans must have
exactly the lengths token_lengths gives for the same arm. Everything is checked (cells and costs below
rows*cols, coordinates in the grid, offsets in range) and a ValueError names the first bad example; out may
then be partly written.)doc");
  m.def("render_text", &render_text, py::arg("tokens"), py::arg("offsets"), py::arg("rows"), py::arg("cols"),
        py::arg("threads") = 0,
        R"doc(Token sequences -> paper text: (bytes uint8[B], text_offsets int64[N+1]).

Sequence i is tokens[offsets[i]:offsets[i+1]]; its words, joined by single spaces and without
<|bos|>/<|eos|>/<|pad|>, are bytes[text_offsets[i]:text_offsets[i+1]] (ASCII). An id outside the
vocabulary of the rows x cols grid raises ValueError naming the sequence.)doc");
}
