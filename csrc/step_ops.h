// The fused per-step operations exposed as sdrt._C.*: argument checks, the per-step scalars in
// float64, and dispatch to the CPU or CUDA kernels.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace sdrt {

namespace py = pybind11;

void linear_combination(py::handle out, const py::sequence& inputs, const std::vector<double>& weights, double bias,
                        uintptr_t stream);
void cfg_combine(py::handle out, py::handle uncond, py::handle conds, const std::vector<double>& weights,
                 double cfg_scale, uintptr_t stream);
void euler_step(py::handle out, py::handle x, py::handle denoised, double sigma, double sigma_next,
                uintptr_t stream);
void euler_ancestral_step(py::handle out, py::handle x, py::handle denoised, py::handle noise, double sigma,
                          double sigma_next, double eta, double s_noise, uintptr_t stream);
void dpmpp_2m_step(py::handle out, py::handle x, py::handle denoised, py::handle old_denoised, double sigma,
                   double sigma_next, std::optional<double> sigma_prev, uintptr_t stream);
void scale_latents(py::handle out, py::handle x, double scaling_factor, double shift_factor, uintptr_t stream);
void unscale_latents(py::handle out, py::handle x, double scaling_factor, double shift_factor, uintptr_t stream);
void to_rgb_uint8(py::handle out, py::handle x, std::optional<std::vector<std::vector<double>>> matrix,
                  std::optional<std::vector<double>> bias, bool round_to_nearest, uintptr_t stream);

// k-diffusion's get_ancestral_step: (sigma_down, sigma_up) for a step sigma -> sigma_next.
std::pair<double, double> ancestral_step_sigmas(double sigma, double sigma_next, double eta);

bool built_with_cuda();
bool built_with_openmp();

}  // namespace sdrt
