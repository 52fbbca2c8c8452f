// The sampler loop in C++: the loop over sigmas that calls the denoiser (a Python callable) and
// runs the fused step kernels in place, for samplers that are pure step math.
#pragma once
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

namespace sdrt {

namespace py = pybind11;

py::object sample_loop(const std::string& method, py::object x, const std::vector<double>& sigmas, py::function model,
                       py::object noise, py::object callback, double eta, double s_noise);

}  // namespace sdrt
