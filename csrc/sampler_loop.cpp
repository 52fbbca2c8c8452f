#include "sampler_loop.h"

#include <array>
#include <cmath>
#include <deque>
#include <optional>

#include "step_ops.h"
#include "tensor_arg.h"

namespace sdrt {

namespace {

constexpr std::array<const char*, 8> kMethods = {"euler",  "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde",
                                                 "dpmpp_2m_sde_heun", "heun", "dpm_2", "lms"};
constexpr int kLmsOrder = 4;

py::object torch_empty_like(const py::object& x) {
  return py::module_::import("torch").attr("empty_like")(x);
}

py::object denoise(py::function& model, const py::object& x, double sigma) {
  return model(x, sigma).attr("contiguous")();
}

// out = sum_k weights[k] * tensors[k] (one fused kernel pass).
void combine(const py::object& out, std::initializer_list<py::object> tensors, const std::vector<double>& weights,
             uintptr_t stream) {
  py::list inputs;
  for (const auto& t : tensors) inputs.append(t);
  linear_combination(out, inputs, weights, 0.0, stream);
}

// Integral over [t_i, t_{i+1}] of the j-th Lagrange basis polynomial through t_i ... t_{i-order+1}
// (k-diffusion's linear_multistep_coeff). The basis has degree order-1 <= 3, so 4-point
// Gauss-Legendre is exact; the Python reference uses scipy's quad (exact to rounding for it too).
double lms_coefficient(int order, const std::vector<double>& t, size_t i, int j) {
  static constexpr double kNodes[4] = {-0.8611363115940526, -0.3399810435848563, 0.3399810435848563,
                                       0.8611363115940526};
  static constexpr double kWeights[4] = {0.3478548451374538, 0.6521451548625461, 0.6521451548625461,
                                         0.3478548451374538};
  const double a = t[i], b = t[i + 1], half = 0.5 * (b - a), mid = 0.5 * (a + b);
  double sum = 0.0;
  for (int q = 0; q < 4; ++q) {
    const double tau = mid + half * kNodes[q];
    double prod = 1.0;
    for (int k = 0; k < order; ++k)
      if (k != j) prod *= (tau - t[i - k]) / (t[i - j] - t[i - k]);
    sum += kWeights[q] * prod;
  }
  return half * sum;
}

}  // namespace

// Mirrors sdrt.sampling.samplers / sde_samplers (the reference): the same kernels in the same
// order, so the results agree to the last bit; the Python loop's per-step work moves here.
py::object sample_loop(const std::string& method, py::object x_in, const std::vector<double>& sigmas,
                       py::function model, py::object noise, py::object callback, double eta, double s_noise,
                       uintptr_t stream) {
  const std::string fn = "sample_loop";
  bool known = false;
  std::string valid;
  for (const char* m : kMethods) {
    known = known || method == m;
    valid += (valid.empty() ? "" : ", ") + std::string(m);
  }
  if (!known) raise_value_error(fn + ": method '" + method + "' is not in the C++ loop; valid: " + valid);
  if (sigmas.size() < 2) raise_value_error(fn + ": 'sigmas' needs at least 2 values");
  for (size_t i = 0; i + 1 < sigmas.size(); ++i)
    if (!(sigmas[i] > 0.0) || !(sigmas[i + 1] >= 0.0) || !std::isfinite(sigmas[i]))
      raise_value_error(fn + ": 'sigmas' must be finite, > 0 except a final 0 (index " + std::to_string(i) + ")");
  const bool sde = method == "dpmpp_2m_sde" || method == "dpmpp_2m_sde_heun";
  if ((method == "euler_ancestral" || (sde && eta != 0.0)) && noise.is_none())
    raise_value_error(fn + ": " + method + " needs 'noise' (a callable (sigma, sigma_next) -> fresh noise)");
  auto draw = [&](double s, double sn) { return noise(s, sn).attr("contiguous")(); };
  py::object x = x_in.attr("clone")();  // the caller's tensor stays as it was
  py::object old = py::none();
  std::optional<double> h_last;
  std::deque<py::object> slopes;  // LMS: newest first
  const size_t steps = sigmas.size() - 1;
  for (size_t i = 0; i < steps; ++i) {
    const double s = sigmas[i], sn = sigmas[i + 1];
    py::object den = denoise(model, x, s);
    if (!callback.is_none()) callback(i, steps, x, s, den);
    if (method == "euler" || ((method == "heun" || method == "dpm_2") && sn == 0.0)) {
      euler_step(x, x, den, s, sn, stream);
    } else if (method == "euler_ancestral") {
      if (sn > 0.0) {
        euler_ancestral_step(x, x, den, draw(s, sn), s, sn, eta, s_noise, stream);
      } else {
        x.attr("copy_")(den);
      }
    } else if (method == "dpmpp_2m") {
      std::optional<double> prev;
      if (!old.is_none()) prev = sigmas[i - 1];
      dpmpp_2m_step(x, x, den, old, s, sn, prev, stream);
      old = den;
    } else if (sde) {  // DPM-Solver++(2M) SDE (k-diffusion sample_dpmpp_2m_sde), t = -log(sigma)
      std::optional<double> h;
      if (sn == 0.0) {
        x.attr("copy_")(den);
      } else {
        h = std::log(s) - std::log(sn);
        const double eta_h = eta * *h;
        const double a = sn / s * std::exp(-eta_h), b = -std::expm1(-*h - eta_h);
        py::list inputs;
        inputs.append(x);
        inputs.append(den);
        std::vector<double> weights = {a, b};
        if (!old.is_none()) {
          const double r = *h_last / *h;
          const double c = method == "dpmpp_2m_sde" ? 0.5 * b / r : (b / (-*h - eta_h) + 1) / r;
          inputs.append(old);
          weights = {a, b + c, -c};
        }
        if (eta != 0.0) {
          inputs.append(draw(s, sn));
          weights.push_back(sn * std::sqrt(-std::expm1(-2 * eta_h)) * s_noise);
        }
        linear_combination(x, inputs, weights, 0.0, stream);
      }
      old = den;
      h_last = h;
    } else if (method == "lms") {  // linear multistep in sigma over the last 4 slopes
      py::object slope = torch_empty_like(x);
      combine(slope, {x, den}, {1 / s, -1 / s}, stream);
      slopes.push_front(slope);
      if (slopes.size() > kLmsOrder) slopes.pop_back();
      const int order = static_cast<int>(slopes.size());
      py::list inputs;
      inputs.append(x);
      std::vector<double> weights = {1.0};
      for (int j = 0; j < order; ++j) {
        inputs.append(slopes[j]);
        weights.push_back(lms_coefficient(order, sigmas, i, j));
      }
      linear_combination(x, inputs, weights, 0.0, stream);
    } else if (method == "heun") {  // Euler, then the slope at its end (Karras et al. 2022, Alg. 2)
      py::object x2 = x.attr("clone")();
      euler_step(x2, x, den, s, sn, stream);
      py::object den2 = denoise(model, x2, sn);
      const double dt = sn - s;
      combine(x, {x, den, x2, den2}, {1 + dt / (2 * s), -dt / (2 * s), dt / (2 * sn), -dt / (2 * sn)}, stream);
    } else {  // dpm_2: the slope at the log-midpoint sigma (k-diffusion sample_dpm_2)
      const double mid = std::exp(0.5 * (std::log(s) + std::log(sn)));
      py::object x2 = x.attr("clone")();
      euler_step(x2, x, den, s, mid, stream);
      py::object den2 = denoise(model, x2, mid);
      const double dt = sn - s;
      combine(x, {x, x2, den2}, {1.0, dt / mid, -dt / mid}, stream);
    }
  }
  return x;
}

}  // namespace sdrt
