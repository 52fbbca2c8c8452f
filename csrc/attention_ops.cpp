#include "attention_ops.h"

#include <cmath>
#include <iterator>
#include <limits>
#include <string>

#include "../kernels/cpu/attention.h"
#include "tensor_arg.h"
#if SDRT_WITH_CUDA
#include "../kernels/cuda/attention.h"
#endif

namespace sdrt {

namespace {

constexpr int64_t kMaxHeadDim = 512;

void check_3d(const TensorArg& t, const TensorArg& q) {
  if (t.shape.size() != 3)
    raise_value_error(t.where() + " has shape " + t.shape_str() + "; expected (batch*heads, length, head_dim)");
  if (t.on_cuda != q.on_cuda || t.device_id != q.device_id)
    raise_value_error(t.where() + " is on another device than 'q'");
  if (t.dtype != q.dtype) raise_type_error(t.where() + " has dtype " + dtype_name(t.dtype) + "; 'q' has " +
                                           dtype_name(q.dtype));
  if (!t.on_cuda && t.dtype != DType::kFloat32 && t.dtype != DType::kBFloat16)
    raise_type_error(t.where() + ": the CPU kernel takes float32 or bfloat16 (cast, or use torch SDPA)");
  if (t.on_cuda && t.dtype != DType::kFloat16 && t.dtype != DType::kBFloat16)
    raise_type_error(t.where() + ": the CUDA kernels take float16 or bfloat16");
}

}  // namespace

void attention(py::handle out_obj, py::handle q_obj, py::handle k_obj, py::handle v_obj, std::optional<double> scale,
               uintptr_t stream) {
  const std::string fn = "attention";
  const TensorArg q = tensor_arg(q_obj, fn, "q"), k = tensor_arg(k_obj, fn, "k"), v = tensor_arg(v_obj, fn, "v");
  const TensorArg out = tensor_arg(out_obj, fn, "out", /*writable=*/true);
  for (const TensorArg* t : {&q, &k, &v, &out}) check_3d(*t, q);
  const int64_t bh = q.shape[0], lq = q.shape[1], d = q.shape[2], lk = k.shape[1];
  if (k.shape[0] != bh || k.shape[2] != d)
    raise_value_error(k.where() + " has shape " + k.shape_str() + "; expected (" + std::to_string(bh) + ", k_len, " +
                      std::to_string(d) + ") to match q " + q.shape_str());
  if (v.shape != k.shape) raise_value_error(v.where() + " has shape " + v.shape_str() + "; expected k's " + k.shape_str());
  if (out.shape != q.shape) raise_value_error(out.where() + " has shape " + out.shape_str() + "; expected q's " + q.shape_str());
  if ((lq < 1 || lk < 1 || d < 1) && bh > 0) raise_value_error(fn + ": empty q, k or v (" + q.shape_str() + ", " + k.shape_str() + ")");
  if (d > kMaxHeadDim) raise_value_error(q.where() + ": head_dim " + std::to_string(d) + " > " + std::to_string(kMaxHeadDim));
  if (bh == 0) return;  // an empty batch: nothing to attend (and empty buffers may share an address)
  for (const TensorArg* t : {&q, &k, &v}) {
    if (t->data == out.data) raise_value_error(out.where() + " must not be one of the inputs (" + t->name + ")");
    check_no_partial_overlap(out, *t);
  }
  const double s = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(d));
  if (!std::isfinite(s) || std::fabs(s) > static_cast<double>(std::numeric_limits<float>::max()))
    raise_value_error(fn + ": 'scale' must be a finite float32 value");
  const AttentionArgs args{q.data, k.data, v.data, out.data, bh, lq, lk, d, static_cast<float>(s)};
  if (q.on_cuda) {
#if SDRT_WITH_CUDA
    if (!cuda::has_attention_kernel(d))
      raise_value_error(q.where() + ": head_dim " + std::to_string(d) + " has no CUDA kernel (" +
                        cuda::attention_head_dims_text() + ")");
    if (bh > 65535) raise_value_error(q.where() + ": batch*heads " + std::to_string(bh) + " > 65535");
    cuda::attention(q.dtype, args, q.device_id, stream);
    return;
#else
    (void)stream;
    raise_value_error(q.where() + " is a CUDA tensor but sdrt._C was built without CUDA (see `sdrt info`)");
#endif
  }
  py::gil_scoped_release release;  // long-running; other Python threads may go on
  cpu::attention(q.dtype, args);
}

std::vector<int> cuda_attention_head_dims() {
#if SDRT_WITH_CUDA
  return {std::begin(cuda::kCudaAttentionHeadDims), std::end(cuda::kCudaAttentionHeadDims)};
#else
  return {};
#endif
}

}  // namespace sdrt
