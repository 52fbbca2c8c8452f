// The sampler loop in C++: the loop over sigmas that calls the denoiser (a Python callable) and
// runs the fused step kernels in place, for samplers that are pure step math.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sdrt {

namespace py = pybind11;

// `stream`: the cudaStream_t (as an integer) the step kernels are queued on for CUDA tensors,
// torch's current stream, so they are ordered after the model's work (0 for CPU tensors).
py::object sample_loop(const std::string& method, py::object x, const std::vector<double>& sigmas, py::function model,
                       py::object noise, py::object callback, double eta, double s_noise, uintptr_t stream);

}  // namespace sdrt
