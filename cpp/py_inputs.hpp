// Checks of the arrays that cross the Python boundary, shared by the bind_*.cpp files: done once per call,
// with errors that name the example, so the loops behind them can trust their inputs.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

namespace reasonless {

namespace py = pybind11;

using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
using U16Array = py::array_t<uint16_t, py::array::c_style | py::array::forcecast>;
using I64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// Integer or bool arrays only: silently truncating floats would hide caller bugs.
inline py::array as_integer_array(const py::object& obj, const char* name) {
  py::array a = py::array::ensure(obj);
  if (!a) throw py::value_error(std::string(name) + " must be array-like");
  const char kind = a.dtype().kind();
  if (kind != 'b' && kind != 'i' && kind != 'u')
    throw py::value_error(std::string(name) + " must hold integers, got dtype " + std::string(py::str(a.dtype())));
  return a;
}


inline void check_side(const char* name, int side) {
  if (side < 4 || side > 64)
    throw py::value_error(std::string(name) + "=" + std::to_string(side) + ": grid sides must be integers from 4 to 64");
}

// Walls as uint8 (N, rows*cols) holding only 0 and 1.
inline U8Array load_walls(const py::object& obj, int rows, int cols) {
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
inline std::vector<int> load_cells(const py::object& obj, const char* name, py::ssize_t n, int rows, int cols,
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

inline uint64_t seed_bits(const py::object& seed) {
  // Any Python int: its low 64 bits (two's complement), so negative seeds work too.
  py::int_ s(seed);
  const unsigned long long v = PyLong_AsUnsignedLongLongMask(s.ptr());
  if (PyErr_Occurred()) throw py::error_already_set();
  return static_cast<uint64_t>(v);
}

// The names of an enum's values (its name table), as a Python tuple.
template <int N>
py::tuple name_tuple(const char* const (&names)[N]) {
  py::tuple t(N);
  for (int i = 0; i < N; ++i) t[i] = py::str(names[i]);
  return t;
}

}  // namespace reasonless
