#include "sampler_loop.h"

#include <cmath>
#include <optional>

#include "step_ops.h"
#include "tensor_arg.h"

namespace sdrt {

namespace {

constexpr const char* kMethods = "euler, euler_ancestral, dpmpp_2m, heun, dpm_2";

py::object denoise(py::function& model, const py::object& x, double sigma) {
  return model(x, sigma).attr("contiguous")();
}

}  // namespace

// Mirrors sdrt.sampling.samplers (the reference): the same kernels in the same order, so the
// results agree to the last bit; the Python loop's per-step work moves here.
py::object sample_loop(const std::string& method, py::object x_in, const std::vector<double>& sigmas,
                       py::function model, py::object noise, py::object callback, double eta, double s_noise,
                       uintptr_t stream) {
  const std::string fn = "sample_loop";
  if (method != "euler" && method != "euler_ancestral" && method != "dpmpp_2m" && method != "heun" &&
      method != "dpm_2")
    raise_value_error(fn + ": method '" + method + "' is not in the C++ loop; valid: " + kMethods);
  if (sigmas.size() < 2) raise_value_error(fn + ": 'sigmas' needs at least 2 values");
  for (size_t i = 0; i + 1 < sigmas.size(); ++i)
    if (!(sigmas[i] > 0.0) || !(sigmas[i + 1] >= 0.0) || !std::isfinite(sigmas[i]))
      raise_value_error(fn + ": 'sigmas' must be finite, > 0 except a final 0 (index " + std::to_string(i) + ")");
  if (method == "euler_ancestral" && noise.is_none())
    raise_value_error(fn + ": euler_ancestral needs 'noise' (a callable returning fresh noise)");
  py::object x = x_in.attr("clone")();  // the caller's tensor stays as it was
  py::object old = py::none();
  const size_t steps = sigmas.size() - 1;
  for (size_t i = 0; i < steps; ++i) {
    const double s = sigmas[i], sn = sigmas[i + 1];
    py::object den = denoise(model, x, s);
    if (!callback.is_none()) callback(i, steps, x, s, den);
    if (method == "euler" || ((method == "heun" || method == "dpm_2") && sn == 0.0)) {
      euler_step(x, x, den, s, sn, stream);
    } else if (method == "euler_ancestral") {
      if (sn > 0.0) {
        euler_ancestral_step(x, x, den, noise().attr("contiguous")(), s, sn, eta, s_noise, stream);
      } else {
        x.attr("copy_")(den);
      }
    } else if (method == "dpmpp_2m") {
      std::optional<double> prev;
      if (!old.is_none()) prev = sigmas[i - 1];
      dpmpp_2m_step(x, x, den, old, s, sn, prev, stream);
      old = den;
    } else if (method == "heun") {  // Euler, then the slope at its end (Karras et al. 2022, Alg. 2)
      py::object x2 = x.attr("clone")();
      euler_step(x2, x, den, s, sn, stream);
      py::object den2 = denoise(model, x2, sn);
      const double dt = sn - s;
      py::list inputs;
      for (const auto& t : {x, den, x2, den2}) inputs.append(t);
      linear_combination(x, inputs, {1 + dt / (2 * s), -dt / (2 * s), dt / (2 * sn), -dt / (2 * sn)}, 0.0, stream);
    } else {  // dpm_2: the slope at the log-midpoint sigma (k-diffusion sample_dpm_2)
      const double mid = std::exp(0.5 * (std::log(s) + std::log(sn)));
      py::object x2 = x.attr("clone")();
      euler_step(x2, x, den, s, mid, stream);
      py::object den2 = denoise(model, x2, mid);
      const double dt = sn - s;
      py::list inputs;
      for (const auto& t : {x, x2, den2}) inputs.append(t);
      linear_combination(x, inputs, {1.0, dt / mid, -dt / mid}, 0.0, stream);
    }
  }
  return x;
}

}  // namespace sdrt
