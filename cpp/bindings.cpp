// The extension module reasonless._core. Each component registers its functions from its own
// bind_*.cpp, where arguments are checked once before the tight loops run without the GIL.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_astar(py::module_& m);
void bind_tokens(py::module_& m);
void bind_verify(py::module_& m);
void bind_arms(py::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "reasonless compiled core: A* search, trace verification, tokenization";
  bind_astar(m);
  bind_tokens(m);
  bind_verify(m);
  bind_arms(m);
}
