// Python bindings of the verifier: verify_batch over many responses (parallel, GIL released), error_names.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <climits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "parallel.hpp"
#include "py_batch.hpp"
#include "verify.hpp"

namespace py = pybind11;

namespace reasonless::verify {
namespace {

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// An array of exactly this dtype and number of dimensions, C-contiguous (copied if it is not): converting
// dtypes here could silently truncate token ids or offsets, so callers convert explicitly.
template <class T>
py::array_t<T, py::array::c_style> exact(const py::object& obj, const char* name, int ndim, const char* dtype) {
  py::array a = py::array::ensure(obj);
  if (!a) throw py::value_error(std::string(name) + " must be a NumPy array");
  if (!py::isinstance<py::array_t<T>>(a))  // an equivalent dtype (native byte order), not merely the same object
    throw py::value_error(std::string(name) + " must have dtype " + dtype + ", got " + std::string(py::str(a.dtype())));
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) + " dimension(s), got shape " +
                          shape_of(a));
  return py::array_t<T, py::array::c_style>::ensure(a);
}

int32_t clip32(int64_t v) { return static_cast<int32_t>(std::min<int64_t>(v, INT32_MAX)); }

void check_sides(int rows, int cols);

Mode parse_mode(const std::string& name) {
  if (name == "strict") return Mode::strict;
  if (name == "paper") return Mode::paper;
  throw py::value_error("unknown verifier mode '" + name + "'; choose 'paper' or 'strict'");
}

// The verdict arrays returned to Python, filled example by example from the worker threads.
struct Verdicts {
  py::array_t<bool> plan_valid, plan_optimal, trace_valid;
  py::array_t<int16_t> first_error;
  py::array_t<int32_t> first_error_at, n_ops, plan_len, counts;
  bool *pv, *po, *tv;
  int16_t* fe;
  int32_t *fa, *no, *pl, *ct;

  explicit Verdicts(py::ssize_t n)
      : plan_valid(n), plan_optimal(n), trace_valid(n), first_error(n), first_error_at(n), n_ops(n), plan_len(n),
        counts({n, static_cast<py::ssize_t>(N_CODES)}), pv(plan_valid.mutable_data()), po(plan_optimal.mutable_data()),
        tv(trace_valid.mutable_data()), fe(first_error.mutable_data()), fa(first_error_at.mutable_data()),
        no(n_ops.mutable_data()), pl(plan_len.mutable_data()), ct(counts.mutable_data()) {}

  void store(int64_t i, const Result& res) {
    pv[i] = res.plan_valid;
    po[i] = res.plan_optimal;
    tv[i] = res.trace_valid;
    fe[i] = res.first_error;
    fa[i] = clip32(res.first_error_at);
    no[i] = clip32(res.n_ops);
    pl[i] = clip32(res.plan_len);
    for (int k = 0; k < N_CODES; ++k) ct[i * N_CODES + k] = clip32(res.counts[k]);
  }

  py::dict dict() const {
    py::dict d;
    d["plan_valid"] = plan_valid;
    d["plan_optimal"] = plan_optimal;
    d["trace_valid"] = trace_valid;
    d["first_error"] = first_error;
    d["first_error_at"] = first_error_at;
    d["n_ops"] = n_ops;
    d["plan_len"] = plan_len;
    d["error_counts"] = counts;
    return d;
  }
};

// A problem the verifier cannot take (a wall value other than 0/1, start or goal on a wall), flagged by the
// parallel loop: the first one is reported here, with the GIL held.
void raise_first_bad_problem(const std::vector<Problem>& problems, const std::vector<uint8_t>& bad, py::ssize_t cells,
                             int cols) {
  for (size_t i = 0; i < bad.size(); ++i) {
    if (!bad[i]) continue;
    const Problem& p = problems[i];
    const std::string ex = "example " + std::to_string(i) + ": ";
    for (py::ssize_t c = 0; c < cells; ++c)
      if (p.walls[c] > 1)
        throw py::value_error(ex + "walls must be 0 (free) or 1 (wall), found " + std::to_string(p.walls[c]) +
                              " at cell " + std::to_string(c));
    const int c = p.walls[p.start] ? p.start : p.goal;
    throw py::value_error(ex + (c == p.start ? "start" : "goal") + " (" + std::to_string(c % cols) + ", " +
                          std::to_string(c / cols) + ") is a wall");
  }
}

py::dict verify_batch(const py::object& walls_obj, int rows, int cols, const py::object& start_obj,
                      const py::object& goal_obj, const py::object& tokens_obj, const py::object& begins_obj,
                      const py::object& ends_obj, const std::string& mode_name, int threads) {
  const Mode mode = parse_mode(mode_name);
  check_sides(rows, cols);

  auto walls = exact<uint8_t>(walls_obj, "walls", 2, "uint8");
  const py::ssize_t n = walls.shape(0), cells = static_cast<py::ssize_t>(rows) * cols;
  if (walls.shape(1) != cells)
    throw py::value_error("walls must have shape (N, rows*cols) = (N, " + std::to_string(cells) + "), got " +
                          shape_of(walls));
  auto start = exact<int32_t>(start_obj, "start", 2, "int32");
  auto goal = exact<int32_t>(goal_obj, "goal", 2, "int32");
  auto tokens = exact<uint16_t>(tokens_obj, "tokens", 1, "uint16");
  auto begins = exact<int64_t>(begins_obj, "begins", 1, "int64");
  auto ends = exact<int64_t>(ends_obj, "ends", 1, "int64");
  for (const py::array* a : {static_cast<py::array*>(&start), static_cast<py::array*>(&goal)})
    if (a->shape(0) != n || a->shape(1) != 2)
      throw py::value_error(std::string(a == &start ? "start" : "goal") + " must have shape (N, 2) = (" +
                            std::to_string(n) + ", 2), got " + shape_of(*a));
  if (begins.shape(0) != n || ends.shape(0) != n)
    throw py::value_error("begins and ends must have shape (N,) = (" + std::to_string(n) + ",), got " +
                          shape_of(begins) + " and " + shape_of(ends));

  const uint8_t* w = walls.data();
  const int32_t* st = start.data();
  const int32_t* go = goal.data();
  const int64_t* b = begins.data();
  const int64_t* e = ends.data();
  const int64_t n_tokens = tokens.shape(0);
  // Coordinates and spans are checked here; wall values, and start and goal being free, in the parallel loop
  // (one pass over the walls, which then are in cache for the verifier), reported after it. Messages are built
  // only for the first bad example.
  std::vector<Problem> problems(static_cast<size_t>(n));
  for (py::ssize_t i = 0; i < n; ++i) {
    int cell[2];
    for (int k = 0; k < 2; ++k) {
      const int32_t* xy = (k == 0 ? st : go) + 2 * i;
      if (xy[0] < 0 || xy[0] >= cols || xy[1] < 0 || xy[1] >= rows)
        throw py::value_error("example " + std::to_string(i) + ": " + (k == 0 ? "start" : "goal") + " (" +
                              std::to_string(xy[0]) + ", " + std::to_string(xy[1]) + ") is outside the grid of " +
                              std::to_string(rows) + " rows and " + std::to_string(cols) + " columns");
      cell[k] = xy[1] * cols + xy[0];
    }
    if (b[i] < 0 || b[i] > e[i] || e[i] > n_tokens)
      throw py::value_error("example " + std::to_string(i) + ": response span [" + std::to_string(b[i]) + ", " +
                            std::to_string(e[i]) + ") must satisfy 0 <= begin <= end <= len(tokens) = " +
                            std::to_string(n_tokens));
    problems[static_cast<size_t>(i)] = Problem{rows, cols, w + i * cells, cell[0], cell[1]};
  }
  auto bad_problem = [&](int64_t i) {
    const Problem& p = problems[static_cast<size_t>(i)];
    uint8_t any = 0;
    for (py::ssize_t c = 0; c < cells; ++c) any |= p.walls[c];
    return (any & ~uint8_t{1}) || p.walls[p.start] || p.walls[p.goal];
  };
  std::vector<uint8_t> bad(static_cast<size_t>(n), 0);
  Verdicts out(n);
  const uint16_t* tk = tokens.data();
  {
    py::gil_scoped_release release;
    // Responses take microseconds each: chunks big enough to amortise the hand-out, small enough to balance.
    const int64_t chunk = 256;
    std::vector<std::unique_ptr<Verifier>> workers(
        static_cast<size_t>(resolve_threads(threads, (n + chunk - 1) / chunk)));
    parallel_chunks(n, chunk, threads, [&](int64_t lo, int64_t hi, int worker) {
      auto& v = workers[static_cast<size_t>(worker)];
      if (!v) v = std::make_unique<Verifier>();
      Result res;
      for (int64_t i = lo; i < hi; ++i) {
        if (i + 1 < hi) {  // the next example's walls and first tokens, while this one runs
          for (py::ssize_t c = 0; c < cells; c += 64) __builtin_prefetch(problems[static_cast<size_t>(i + 1)].walls + c);
          __builtin_prefetch(tk + b[i + 1]);
        }
        if (bad_problem(i)) {
          bad[static_cast<size_t>(i)] = 1;
          continue;
        }
        v->run(problems[static_cast<size_t>(i)], tk + b[i], e[i] - b[i], mode, &res);
        out.store(i, res);
      }
    });
  }
  raise_first_bad_problem(problems, bad, cells, cols);
  return out.dict();
}

// A corpus's own traces, verified without materializing their tokens: each example's response is written into a
// buffer of its worker thread (tokens::batch_visit_responses) and verified there while the buffer is in cache. The verdicts equal
// verify_batch's on the tokens tokenize_into writes: the same verifier reads the same response tokens.
py::dict verify_examples(const py::object& walls, int rows, int cols, const py::object& start, const py::object& goal,
                         const py::object& ops, const py::object& ops_offsets, const py::object& plan,
                         const py::object& plan_offsets, const std::string& mode_name, int threads) {
  namespace tk = reasonless::tokens;
  const Mode mode = parse_mode(mode_name);
  const tk::Arm arm = tk::Arm::correct;
  tk::BatchArrays a;
  tk::load_examples(a, walls, rows, cols, start, goal, ops, ops_offsets, plan, plan_offsets);
  const tk::Batch& batch = a.b;
  const py::ssize_t n = batch.n, cells = static_cast<py::ssize_t>(rows) * cols;
  Verdicts out(n);
  std::vector<Problem> problems(static_cast<size_t>(n));
  std::vector<uint8_t> bad(static_cast<size_t>(n), 0);
  std::vector<std::unique_ptr<Verifier>> workers(static_cast<size_t>(resolve_threads(threads, n)));
  tk::FaultReport fault;
  {
    py::gil_scoped_release release;
    fault = tk::batch_visit_responses(batch, arm, threads, [&](int64_t i, const uint16_t* response, int64_t length,
                                                               int worker) {
      // batch_visit checked the coordinates and wall values; the verifier also needs start and goal free.
      const int32_t* s = batch.start + 2 * i;
      const int32_t* g = batch.goal + 2 * i;
      Problem& p = problems[static_cast<size_t>(i)];
      p = Problem{rows, cols, batch.walls + i * cells, s[1] * cols + s[0], g[1] * cols + g[0]};
      if (p.walls[p.start] || p.walls[p.goal]) {
        bad[static_cast<size_t>(i)] = 1;
        return;
      }
      auto& v = workers[static_cast<size_t>(worker)];
      if (!v) v = std::make_unique<Verifier>();
      Result res;
      v->run(p, response, length, mode, &res);
      out.store(i, res);
    });
  }
  if (fault.example < n) throw py::value_error(tk::describe(batch, fault, arm, nullptr, 0));
  raise_first_bad_problem(problems, bad, cells, cols);
  return out.dict();
}

void check_sides(int rows, int cols) {
  for (auto [name, side] : {std::pair<const char*, int>{"rows", rows}, {"cols", cols}})
    if (side < 4 || side > 64)
      throw py::value_error(std::string(name) + "=" + std::to_string(side) + ": grid sides must be integers from 4 to 64");
}

py::array_t<uint16_t> encode_text(std::string_view text, int rows, int cols) {
  check_sides(rows, cols);
  std::vector<uint16_t> ids;
  {
    py::gil_scoped_release release;
    ids.reserve(text.size() / 3 + 1);
    encode_words(text.data(), text.size(), rows, cols, &ids);
  }
  py::array_t<uint16_t> out(static_cast<py::ssize_t>(ids.size()));
  std::copy(ids.begin(), ids.end(), out.mutable_data());
  return out;
}

py::tuple parse_prompt_text(std::string_view text, int rows, int cols) {
  check_sides(rows, cols);
  ParsedPrompt p;
  if (!parse_prompt(text.data(), text.size(), rows, cols, &p)) throw py::value_error(p.error);
  py::array_t<uint8_t> walls(static_cast<py::ssize_t>(p.walls.size()));
  std::copy(p.walls.begin(), p.walls.end(), walls.mutable_data());
  py::object response = py::none();
  if (p.response_begin >= 0)
    response = py::str(text.data() + p.response_begin, text.size() - static_cast<size_t>(p.response_begin));
  return py::make_tuple(walls, py::make_tuple(p.start_x, p.start_y), py::make_tuple(p.goal_x, p.goal_y), response);
}

}  // namespace
}  // namespace reasonless::verify

void bind_verify(py::module_& m) {
  using namespace reasonless::verify;
  m.def("verify_batch", &verify_batch, py::arg("walls"), py::arg("rows"), py::arg("cols"), py::arg("start"),
        py::arg("goal"), py::arg("tokens"), py::arg("begins"), py::arg("ends"), py::arg("mode") = "strict",
        py::arg("threads") = 0,
        "Verifies responses tokens[begins[i]:ends[i]] (ids of the vocabulary for rows x cols) against problems\n"
        "(walls uint8 (N, rows*cols), start/goal int32 (N, 2) as (x, y)) in mode 'paper' or 'strict'.\n"
        "Returns a dict of arrays: plan_valid, plan_optimal, trace_valid (bool), first_error (int16 code, -1 none),\n"
        "first_error_at (int32 operation index, -1 none), n_ops, plan_len (int32), error_counts (int32 (N, codes)).\n"
        "Rules: cpp/verify.hpp and docs/design.md §5.");
  m.def("verify_examples", &verify_examples, py::arg("walls"), py::arg("rows"), py::arg("cols"), py::arg("start"),
        py::arg("goal"), py::arg("ops"), py::arg("ops_offsets"), py::arg("plan"), py::arg("plan_offsets"),
        py::arg("mode") = "strict", py::arg("threads") = 0,
        "Verifies the A* results of examples in the corpus layout (the arrays of tokenize_into), tokenizing each one\n"
        "(arm 'correct') into a per-thread buffer: the verdicts of verify_batch on tokenize_into's output, without\n"
        "the memory of the whole batch's tokens. Returns the dict of verify_batch.");
  m.def(
      "error_names",
      [] {
        std::vector<std::string> names;
        for (int c = 0; c < N_CODES; ++c) names.emplace_back(code_name(c));
        return names;
      },
      "Names of the verifier's error codes, indexed by code.");
  m.def(
      "trace_error_codes",
      [] {
        std::vector<int> codes;
        for (int c = 0; c < N_CODES; ++c)
          if (is_trace_error(c)) codes.push_back(c);
        return codes;
      },
      "Codes that make a trace invalid (the others are plan errors).");
  m.def("encode_words", &encode_text, py::arg("text"), py::arg("rows"), py::arg("cols"),
        "Token ids (uint16) of the words of text, split at ASCII whitespace; words outside the rows x cols\n"
        "vocabulary become <|unk|>.");
  m.def("parse_prompt_text", &parse_prompt_text, py::arg("text"), py::arg("rows"), py::arg("cols"),
        "Parses '[<|bos|>] query start X Y goal X Y (wall X Y)* [reasoning ...]' into (walls uint8[rows*cols],\n"
        "(sx, sy), (gx, gy), response text from 'reasoning' on or None). ValueError says what is malformed.");
}
