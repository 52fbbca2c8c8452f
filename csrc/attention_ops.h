// Fused attention exposed as sdrt._C.attention: argument checks at the boundary, then the kernel.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>

namespace sdrt {

namespace py = pybind11;

void attention(py::handle out, py::handle q, py::handle k, py::handle v, std::optional<double> scale,
               uintptr_t stream);

}  // namespace sdrt
