// Tensors crossing the Python boundary: NumPy (buffer protocol), DLPack capsules
// (torch.utils.dlpack.to_dlpack) and objects with __dlpack__. Every check that can fail raises
// a Python ValueError / TypeError naming the function and the argument.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../kernels/common/dtype.h"

namespace sdrt {

namespace py = pybind11;

struct TensorArg {
  std::string fn;    // the function being called, for messages
  std::string name;  // the argument's name, for messages
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  bool on_cuda = false;
  int device_id = 0;
  int64_t numel = 1;
  std::shared_ptr<void> keepalive;  // the buffer view or capsule backing `data`

  std::string shape_str() const;
  std::string where() const { return fn + ": argument '" + name + "'"; }
  int64_t nbytes() const { return numel * dtype_size(dtype); }
};

// Parses `obj` into a view of contiguous memory. `writable` asks a buffer for write access.
TensorArg tensor_arg(py::handle obj, const std::string& fn, const std::string& name, bool writable = false);

// Raise unless `a` has `ref`'s shape, dtype and device.
void check_like(const TensorArg& a, const TensorArg& ref);
// Raise unless all tensors live on one device; returns nothing, the caller reads ref.on_cuda.
void check_float(const TensorArg& a);
// Raise if `out` partially overlaps `in` (exact aliasing, i.e. in-place, is allowed).
void check_no_partial_overlap(const TensorArg& out, const TensorArg& in);

[[noreturn]] void raise_value_error(const std::string& msg);
[[noreturn]] void raise_type_error(const std::string& msg);

}  // namespace sdrt
