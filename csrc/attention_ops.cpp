#include "attention_ops.h"

#include <cmath>
#include <string>

#include "../kernels/cpu/attention.h"
#include "tensor_arg.h"

namespace sdrt {

namespace {

constexpr int64_t kMaxHeadDim = 512;

void check_3d(const TensorArg& t) {
  if (t.shape.size() != 3)
    raise_value_error(t.where() + " has shape " + t.shape_str() + "; expected (batch*heads, length, head_dim)");
  if (t.dtype != DType::kFloat32)
    raise_type_error(t.where() + ": only float32 is supported on the CPU (cast, or use torch SDPA)");
  if (t.on_cuda) raise_value_error(t.where() + " is on a CUDA device; the sdrt attention kernel runs on the CPU");
}

}  // namespace

void attention(py::handle out_obj, py::handle q_obj, py::handle k_obj, py::handle v_obj, std::optional<double> scale) {
  const std::string fn = "attention";
  const TensorArg q = tensor_arg(q_obj, fn, "q"), k = tensor_arg(k_obj, fn, "k"), v = tensor_arg(v_obj, fn, "v");
  const TensorArg out = tensor_arg(out_obj, fn, "out", /*writable=*/true);
  for (const TensorArg* t : {&q, &k, &v, &out}) check_3d(*t);
  const int64_t bh = q.shape[0], lq = q.shape[1], d = q.shape[2], lk = k.shape[1];
  if (k.shape[0] != bh || k.shape[2] != d)
    raise_value_error(k.where() + " has shape " + k.shape_str() + "; expected (" + std::to_string(bh) + ", k_len, " +
                      std::to_string(d) + ") to match q " + q.shape_str());
  if (v.shape != k.shape) raise_value_error(v.where() + " has shape " + v.shape_str() + "; expected k's " + k.shape_str());
  if (out.shape != q.shape) raise_value_error(out.where() + " has shape " + out.shape_str() + "; expected q's " + q.shape_str());
  if (lq < 1 || lk < 1 || d < 1) raise_value_error(fn + ": empty q, k or v (" + q.shape_str() + ", " + k.shape_str() + ")");
  if (d > kMaxHeadDim) raise_value_error(q.where() + ": head_dim " + std::to_string(d) + " > " + std::to_string(kMaxHeadDim));
  for (const TensorArg* t : {&q, &k, &v}) {
    if (t->data == out.data) raise_value_error(out.where() + " must not be one of the inputs (" + t->name + ")");
    check_no_partial_overlap(out, *t);
  }
  const double s = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(d));
  if (!std::isfinite(s)) raise_value_error(fn + ": 'scale' must be finite");
  cpu::AttentionParams p{static_cast<const float*>(q.data), static_cast<const float*>(k.data),
                         static_cast<const float*>(v.data), static_cast<float*>(out.data), bh, lq, lk, d,
                         static_cast<float>(s)};
  py::gil_scoped_release release;  // long-running; other Python threads may go on
  cpu::attention_f32(p);
}

}  // namespace sdrt
