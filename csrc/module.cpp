// The one Python extension module, sdrt._C. Bindings only: the checks live in step_ops.cpp /
// tensor_arg.cpp, the math in kernels/.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "attention_ops.h"
#include "sampler_loop.h"
#include "step_ops.h"

#ifndef SDRT_VERSION
#define SDRT_VERSION "0.0.0"
#endif
#ifndef SDRT_CUDA_ARCHITECTURES
#define SDRT_CUDA_ARCHITECTURES ""
#endif

namespace py = pybind11;
using namespace pybind11::literals;

PYBIND11_MODULE(_C, m) {
  m.doc() = "sdrt compiled core: fused sampler-step kernels (CPU and, when built with it, CUDA).";

  m.def("build_info", [] {
    py::dict d;
    d["version"] = SDRT_VERSION;
    d["cuda"] = sdrt::built_with_cuda();
    d["cuda_architectures"] = std::string(SDRT_CUDA_ARCHITECTURES);
    d["openmp"] = sdrt::built_with_openmp();
    d["cuda_attention_head_dims"] = sdrt::cuda_attention_head_dims();
    return d;
  }, "Facts about this build: version, CUDA, OpenMP, the head dims of the CUDA attention kernels.");

  m.def("linear_combination", &sdrt::linear_combination, "out"_a, "inputs"_a, "weights"_a, "bias"_a = 0.0,
        "stream"_a = 0,
        "out = bias + sum_k weights[k] * inputs[k] in one pass (multi-stage sampler updates whose "
        "coefficients the caller computed).");
  m.def("cfg_combine", &sdrt::cfg_combine, "out"_a, "uncond"_a, "conds"_a, "weights"_a, "cfg_scale"_a,
        "stream"_a = 0,
        "out = uncond + sum_i (conds[i] - uncond) * weights[i] * cfg_scale (A1111 composable diffusion); "
        "conds has shape (len(weights), *uncond.shape).");
  m.def("euler_step", &sdrt::euler_step, "out"_a, "x"_a, "denoised"_a, "sigma"_a, "sigma_next"_a, "stream"_a = 0,
        "Euler step of the probability-flow ODE (Karras et al. 2022, Alg. 2 with s_churn = 0).");
  m.def("euler_ancestral_step", &sdrt::euler_ancestral_step, "out"_a, "x"_a, "denoised"_a, "noise"_a, "sigma"_a,
        "sigma_next"_a, "eta"_a = 1.0, "s_noise"_a = 1.0, "stream"_a = 0,
        "Euler ancestral step (k-diffusion sample_euler_ancestral): Euler to sigma_down, add noise * sigma_up.");
  m.def("dpmpp_2m_step", &sdrt::dpmpp_2m_step, "out"_a, "x"_a, "denoised"_a, "old_denoised"_a = py::none(),
        "sigma"_a, "sigma_next"_a, "sigma_prev"_a = py::none(), "stream"_a = 0,
        "DPM-Solver++(2M) step (Lu et al. 2022; k-diffusion sample_dpmpp_2m). old_denoised=None is the "
        "first-order first step.");
  m.def("scale_latents", &sdrt::scale_latents, "out"_a, "x"_a, "scaling_factor"_a, "shift_factor"_a = 0.0,
        "stream"_a = 0, "out = (x - shift_factor) * scaling_factor (VAE latents -> diffusion space).");
  m.def("unscale_latents", &sdrt::unscale_latents, "out"_a, "x"_a, "scaling_factor"_a, "shift_factor"_a = 0.0,
        "stream"_a = 0, "out = x / scaling_factor + shift_factor (diffusion space -> VAE latents).");
  m.def("to_rgb_uint8", &sdrt::to_rgb_uint8, "out"_a, "x"_a, "matrix"_a = py::none(), "bias"_a = py::none(),
        "round"_a = false, "stream"_a = 0,
        "(N, C, H, W) values in [-1, 1] (optionally mixed to RGB by a (C, 3) matrix plus bias) -> "
        "(N, H, W, 3) uint8; truncates like A1111 unless round=True.");
  m.def("attention", &sdrt::attention, "out"_a, "q"_a, "k"_a, "v"_a, "scale"_a = py::none(), "stream"_a = 0,
        "out = softmax(q k^T * scale) v for (batch*heads, length, head_dim) tensors, fused (online softmax "
        "over key blocks): float32 or bfloat16 on the CPU (fp32 arithmetic), float16/bfloat16 on CUDA (head dims: "
        "build_info()['cuda_attention_head_dims']); "
        "scale defaults to 1/sqrt(head_dim).");
  m.def("sample_loop", &sdrt::sample_loop, "method"_a, "x"_a, "sigmas"_a, "model"_a, "noise"_a = py::none(),
        "callback"_a = py::none(), "eta"_a = 1.0, "s_noise"_a = 1.0, "stream"_a = 0,
        "The sampler loop in C++ for euler, euler_ancestral, dpmpp_2m, dpmpp_2m_sde(_heun), heun, dpm_2, lms: "
        "model(x, sigma) -> "
        "denoised (a Python callable), noise(sigma, sigma_next) -> fresh noise, the fused step kernels in place "
        "on a clone of x; returns it.");
  m.def("ancestral_step_sigmas", &sdrt::ancestral_step_sigmas, "sigma"_a, "sigma_next"_a, "eta"_a = 1.0,
        "(sigma_down, sigma_up) of k-diffusion's get_ancestral_step.");
}
