// Fused attention exposed as sdrt._C.attention: argument checks at the boundary, then the kernel.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace sdrt {

namespace py = pybind11;

void attention(py::handle out, py::handle q, py::handle k, py::handle v, std::optional<double> scale,
               uintptr_t stream);

// The head dims with a CUDA attention kernel in this build (kernels/cuda/attention_head_dims.h);
// empty when built without CUDA.
std::vector<int> cuda_attention_head_dims();

}  // namespace sdrt
