// Python bindings of the tokenizer: token_lengths, tokenize_into, render_text (reasonless._core).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "py_batch.hpp"
#include "tokens.hpp"

namespace py = pybind11;
using namespace reasonless::tokens;

namespace {

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
  load_examples(a, walls, rows, cols, start, goal, ops, ops_offsets, plan, plan_offsets);
  const int64_t n = a.b.n;

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
        R"doc(Token counts of the training sequences of a batch (docs/design.md §4).

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
