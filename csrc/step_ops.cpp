#include "step_ops.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "../kernels/cpu/step_kernels.h"
#include "tensor_arg.h"
#if SDRT_WITH_CUDA
#include "../kernels/cuda/step_kernels.h"
#endif

namespace sdrt {
namespace {

void require(bool ok, const std::string& fn, const std::string& msg) {
  if (!ok) raise_value_error(fn + ": " + msg);
}

void require_finite(double v, const std::string& fn, const char* name) {
  require(std::isfinite(v), fn, std::string("'") + name + "' must be finite, got " + std::to_string(v));
}

// The one place that picks CPU or CUDA for a kernel, from where the output lives.
template <class Params>
void launch(const TensorArg& where, const Params& p, uintptr_t stream,
            void (*cpu_fn)(DType, const Params&),
            void (*cuda_fn)(DType, const Params&, int, uintptr_t), DType dtype) {
  if (!where.on_cuda) {
    py::gil_scoped_release release;
    cpu_fn(dtype, p);
    return;
  }
#if SDRT_WITH_CUDA
  cuda_fn(dtype, p, where.device_id, stream);
#else
  (void)cuda_fn;
  (void)stream;
  raise_value_error(where.where() + " is a CUDA tensor but sdrt._C was built without CUDA "
                    "(see `sdrt info`)");
#endif
}

#if SDRT_WITH_CUDA
constexpr auto kCudaWeightedSum = &cuda::weighted_sum;
constexpr auto kCudaToRgb = &cuda::to_rgb_uint8;
#else
constexpr void (*kCudaWeightedSum)(DType, const WeightedSumParams&, int, uintptr_t) = nullptr;
constexpr void (*kCudaToRgb)(DType, const RgbParams&, int, uintptr_t) = nullptr;
#endif

// out = bias + sum_k weights[k] * inputs[k], all of `out`'s shape, dtype and device.
void weighted_sum(const TensorArg& out, const std::vector<const TensorArg*>& inputs, const std::vector<double>& weights,
                  double bias, uintptr_t stream, bool deltas_from_first = false) {
  WeightedSumParams p{};
  p.deltas_from_first = deltas_from_first;
  p.n_inputs = static_cast<int>(inputs.size());
  for (size_t k = 0; k < inputs.size(); ++k) {
    check_like(*inputs[k], out);
    check_no_partial_overlap(out, *inputs[k]);
    p.inputs[k] = inputs[k]->data;
    p.weights[k] = static_cast<float>(weights[k]);
  }
  p.bias = static_cast<float>(bias);
  p.out = out.data;
  p.numel = out.numel;
  launch(out, p, stream, &cpu::weighted_sum, kCudaWeightedSum, out.dtype);
}

TensorArg float_out(py::handle obj, const std::string& fn) {
  TensorArg out = tensor_arg(obj, fn, "out", /*writable=*/true);
  check_float(out);
  return out;
}

}  // namespace

void linear_combination(py::handle out_obj, const py::sequence& inputs_obj, const std::vector<double>& weights,
                        double bias, uintptr_t stream) {
  const std::string fn = "linear_combination";
  const size_t n = py::len(inputs_obj);
  require(n >= 1, fn, "'inputs' must hold at least one tensor");
  require(n == weights.size(), fn, "'inputs' has " + std::to_string(n) + " tensors but 'weights' has " +
                                       std::to_string(weights.size()) + " entries");
  require(n <= static_cast<size_t>(kMaxWeightedInputs), fn,
          "at most " + std::to_string(kMaxWeightedInputs) + " inputs are combined in one call");
  require_finite(bias, fn, "bias");
  for (double w : weights) require_finite(w, fn, "weights");
  const TensorArg out = float_out(out_obj, fn);
  std::vector<TensorArg> args;
  args.reserve(n);
  for (size_t k = 0; k < n; ++k) args.push_back(tensor_arg(inputs_obj[k], fn, "inputs[" + std::to_string(k) + "]"));
  std::vector<const TensorArg*> ptrs;
  for (const auto& a : args) ptrs.push_back(&a);
  weighted_sum(out, ptrs, weights, bias, stream);
}

void cfg_combine(py::handle out_obj, py::handle uncond_obj, py::handle conds_obj, const std::vector<double>& weights,
                 double cfg_scale, uintptr_t stream) {
  const std::string fn = "cfg_combine";
  require_finite(cfg_scale, fn, "cfg_scale");
  const TensorArg out = float_out(out_obj, fn);
  const TensorArg uncond = tensor_arg(uncond_obj, fn, "uncond");
  const TensorArg conds = tensor_arg(conds_obj, fn, "conds");
  check_like(uncond, out);
  const int64_t k = static_cast<int64_t>(weights.size());
  require(k >= 1, fn, "'weights' must name at least one cond");
  require(k < kMaxWeightedInputs, fn,
          "'weights' has " + std::to_string(k) + " entries; at most " + std::to_string(kMaxWeightedInputs - 1) +
              " conds (AND sub-prompts) are combined in one call");
  for (double w : weights) require_finite(w, fn, "weights");
  std::vector<int64_t> expected{k};
  expected.insert(expected.end(), out.shape.begin(), out.shape.end());
  if (conds.shape != expected) {
    TensorArg e = out;
    e.shape = expected;
    raise_value_error(conds.where() + " has shape " + conds.shape_str() + "; expected (len(weights), *uncond.shape) = " +
                      e.shape_str());
  }
  // A1111's composable-diffusion combine: uncond + sum_i (cond_i - uncond) * weight_i * cfg_scale.
  std::vector<TensorArg> cond_views(k, conds);
  std::vector<const TensorArg*> inputs{&uncond};
  std::vector<double> coeffs{1.0};
  for (int64_t i = 0; i < k; ++i) {
    cond_views[i].shape = out.shape;
    cond_views[i].numel = out.numel;
    cond_views[i].data = static_cast<char*>(conds.data) + i * out.nbytes();
    cond_views[i].name = "conds[" + std::to_string(i) + "]";
    inputs.push_back(&cond_views[i]);
    coeffs.push_back(weights[i] * cfg_scale);
  }
  weighted_sum(out, inputs, coeffs, 0.0, stream, /*deltas_from_first=*/true);
}

void euler_step(py::handle out_obj, py::handle x_obj, py::handle den_obj, double sigma, double sigma_next,
                uintptr_t stream) {
  const std::string fn = "euler_step";
  require_finite(sigma, fn, "sigma");
  require_finite(sigma_next, fn, "sigma_next");
  require(sigma > 0.0, fn, "'sigma' must be > 0, got " + std::to_string(sigma));
  require(sigma_next >= 0.0, fn, "'sigma_next' must be >= 0, got " + std::to_string(sigma_next));
  const TensorArg out = float_out(out_obj, fn);
  const TensorArg x = tensor_arg(x_obj, fn, "x");
  const TensorArg den = tensor_arg(den_obj, fn, "denoised");
  // Karras et al. 2022, Alg. 2 (s_churn = 0): d = (x - denoised) / sigma; x + d * (sigma_next - sigma).
  const double c = (sigma_next - sigma) / sigma;
  weighted_sum(out, {&x, &den}, {1.0 + c, -c}, 0.0, stream);
}

std::pair<double, double> ancestral_step_sigmas(double sigma, double sigma_next, double eta) {
  if (eta == 0.0) return {sigma_next, 0.0};
  const double up = std::min(sigma_next, eta * std::sqrt(std::max(0.0, sigma_next * sigma_next *
                                                                         (sigma * sigma - sigma_next * sigma_next) /
                                                                         (sigma * sigma))));
  const double down = std::sqrt(std::max(0.0, sigma_next * sigma_next - up * up));
  return {down, up};
}

void euler_ancestral_step(py::handle out_obj, py::handle x_obj, py::handle den_obj, py::handle noise_obj,
                          double sigma, double sigma_next, double eta, double s_noise, uintptr_t stream) {
  const std::string fn = "euler_ancestral_step";
  require_finite(sigma, fn, "sigma");
  require_finite(sigma_next, fn, "sigma_next");
  require_finite(eta, fn, "eta");
  require_finite(s_noise, fn, "s_noise");
  require(sigma > 0.0, fn, "'sigma' must be > 0, got " + std::to_string(sigma));
  require(sigma_next >= 0.0 && sigma_next <= sigma, fn,
          "'sigma_next' must be in [0, sigma], got " + std::to_string(sigma_next));
  require(eta >= 0.0, fn, "'eta' must be >= 0, got " + std::to_string(eta));
  const TensorArg out = float_out(out_obj, fn);
  const TensorArg x = tensor_arg(x_obj, fn, "x");
  const TensorArg den = tensor_arg(den_obj, fn, "denoised");
  const TensorArg noise = tensor_arg(noise_obj, fn, "noise");
  // k-diffusion sample_euler_ancestral: Euler step to sigma_down, then noise scaled by sigma_up.
  const auto [down, up] = ancestral_step_sigmas(sigma, sigma_next, eta);
  const double c = (down - sigma) / sigma;
  weighted_sum(out, {&x, &den, &noise}, {1.0 + c, -c, s_noise * up}, 0.0, stream);
}

void dpmpp_2m_step(py::handle out_obj, py::handle x_obj, py::handle den_obj, py::handle old_obj, double sigma,
                   double sigma_next, std::optional<double> sigma_prev, uintptr_t stream) {
  const std::string fn = "dpmpp_2m_step";
  require_finite(sigma, fn, "sigma");
  require_finite(sigma_next, fn, "sigma_next");
  require(sigma > 0.0, fn, "'sigma' must be > 0, got " + std::to_string(sigma));
  require(sigma_next >= 0.0 && sigma_next < sigma, fn,
          "'sigma_next' must be in [0, sigma), got " + std::to_string(sigma_next));
  const TensorArg out = float_out(out_obj, fn);
  const TensorArg x = tensor_arg(x_obj, fn, "x");
  const TensorArg den = tensor_arg(den_obj, fn, "denoised");
  // Lu et al. 2022 (DPM-Solver++), multistep 2nd order in k-diffusion's sample_dpmpp_2m, t = -log(sigma).
  if (sigma_next == 0.0) {  // last step: x_next = denoised
    check_like(x, out);
    weighted_sum(out, {&den}, {1.0}, 0.0, stream);
    return;
  }
  const double h = std::log(sigma) - std::log(sigma_next);
  const double a = sigma_next / sigma;
  const double b = -std::expm1(-h);
  if (old_obj.is_none()) {
    weighted_sum(out, {&x, &den}, {a, b}, 0.0, stream);
    return;
  }
  require(sigma_prev.has_value(), fn, "'sigma_prev' is required when 'old_denoised' is given");
  require_finite(*sigma_prev, fn, "sigma_prev");
  require(*sigma_prev > sigma, fn,
          "'sigma_prev' must be > sigma (sigmas decrease), got " + std::to_string(*sigma_prev));
  const TensorArg old = tensor_arg(old_obj, fn, "old_denoised");
  const double h_last = std::log(*sigma_prev) - std::log(sigma);
  const double r = h_last / h;
  weighted_sum(out, {&x, &den, &old}, {a, b * (1.0 + 1.0 / (2.0 * r)), -b / (2.0 * r)}, 0.0, stream);
}

namespace {

// VAE latents <-> diffusion space (diffusers' AutoencoderKL convention):
// scale: (z - shift) * factor; unscale: x / factor + shift.
void latent_affine(const std::string& fn, py::handle out_obj, py::handle x_obj, double scaling_factor,
                   double shift_factor, bool unscale, uintptr_t stream) {
  require_finite(scaling_factor, fn, "scaling_factor");
  require_finite(shift_factor, fn, "shift_factor");
  require(scaling_factor != 0.0, fn, "'scaling_factor' must be non-zero");
  const TensorArg out = float_out(out_obj, fn);
  const TensorArg x = tensor_arg(x_obj, fn, "x");
  if (unscale) {
    weighted_sum(out, {&x}, {1.0 / scaling_factor}, shift_factor, stream);
  } else {
    weighted_sum(out, {&x}, {scaling_factor}, -shift_factor * scaling_factor, stream);
  }
}

}  // namespace

void scale_latents(py::handle out_obj, py::handle x_obj, double scaling_factor, double shift_factor,
                   uintptr_t stream) {
  latent_affine("scale_latents", out_obj, x_obj, scaling_factor, shift_factor, /*unscale=*/false, stream);
}

void unscale_latents(py::handle out_obj, py::handle x_obj, double scaling_factor, double shift_factor,
                     uintptr_t stream) {
  latent_affine("unscale_latents", out_obj, x_obj, scaling_factor, shift_factor, /*unscale=*/true, stream);
}

void to_rgb_uint8(py::handle out_obj, py::handle x_obj, std::optional<std::vector<std::vector<double>>> matrix,
                  std::optional<std::vector<double>> bias, bool round_to_nearest, uintptr_t stream) {
  const std::string fn = "to_rgb_uint8";
  const TensorArg out = tensor_arg(out_obj, fn, "out", /*writable=*/true);
  const TensorArg x = tensor_arg(x_obj, fn, "x");
  check_float(x);
  if (out.dtype != DType::kUInt8) raise_type_error(out.where() + " must have dtype uint8, got " + dtype_name(out.dtype));
  if (x.shape.size() != 4) raise_value_error(x.where() + " must be (N, C, H, W), got shape " + x.shape_str());
  const int64_t n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
  if (out.shape != std::vector<int64_t>{n, h, w, 3})
    raise_value_error(out.where() + " has shape " + out.shape_str() + "; expected (N, H, W, 3) = (" +
                      std::to_string(n) + ", " + std::to_string(h) + ", " + std::to_string(w) + ", 3)");
  if (out.on_cuda != x.on_cuda || out.device_id != x.device_id)
    raise_value_error(out.where() + " must be on the same device as 'x'");
  require(c >= 1 && c <= kMaxRgbChannels, fn,
          "'x' has " + std::to_string(c) + " channels; 1 to " + std::to_string(kMaxRgbChannels) + " are supported");
  RgbParams p{};
  p.input = x.data;
  p.out = static_cast<uint8_t*>(out.data);
  p.batch = n;
  p.channels = c;
  p.pixels = h * w;
  p.round_to_nearest = round_to_nearest;
  if (matrix) {
    require(static_cast<int64_t>(matrix->size()) == c, fn,
            "'matrix' has " + std::to_string(matrix->size()) + " rows; expected one per channel of 'x' (" +
                std::to_string(c) + ")");
    for (int64_t ci = 0; ci < c; ++ci) {
      require((*matrix)[ci].size() == 3, fn, "'matrix' rows must have 3 entries (R, G, B)");
      for (int j = 0; j < 3; ++j) {
        require_finite((*matrix)[ci][j], fn, "matrix");
        p.matrix[ci][j] = static_cast<float>((*matrix)[ci][j]);
      }
    }
  } else {
    require(c == 3, fn, "'x' has " + std::to_string(c) + " channels; without 'matrix' it must be RGB (3 channels)");
    for (int j = 0; j < 3; ++j) p.matrix[j][j] = 1.0f;
  }
  if (bias) {
    require(bias->size() == 3, fn, "'bias' must have 3 entries (R, G, B)");
    for (int j = 0; j < 3; ++j) {
      require_finite((*bias)[j], fn, "bias");
      p.bias[j] = static_cast<float>((*bias)[j]);
    }
  }
  launch(out, p, stream, &cpu::to_rgb_uint8, kCudaToRgb, x.dtype);
}

bool built_with_cuda() { return SDRT_WITH_CUDA != 0; }

bool built_with_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace sdrt
