#include "tensor_arg.h"

#include <sstream>

#include "dlpack.h"

namespace sdrt {

[[noreturn]] void raise_value_error(const std::string& msg) { throw py::value_error(msg); }
[[noreturn]] void raise_type_error(const std::string& msg) { throw py::type_error(msg); }

std::string TensorArg::shape_str() const {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) s << ",";
  s << ")";
  return s.str();
}

namespace {

void check_row_major(const TensorArg& t, const std::vector<int64_t>& strides_elems) {
  int64_t expected = 1;
  for (int i = static_cast<int>(t.shape.size()) - 1; i >= 0; --i) {
    if (t.shape[i] != 1 && strides_elems[i] != expected)
      raise_value_error(t.where() + " must be contiguous (C order); call .contiguous() or "
                        "np.ascontiguousarray() first");
    expected *= t.shape[i];
  }
}

DType dtype_from_format(const TensorArg& t, const std::string& format, ssize_t itemsize) {
  const char code = format.empty() ? '?' : format.back();
  if (code == 'f' && itemsize == 4) return DType::kFloat32;
  if (code == 'e' && itemsize == 2) return DType::kFloat16;
  if (code == 'B' && itemsize == 1) return DType::kUInt8;
  raise_type_error(t.where() + " has unsupported element format '" + format +
                   "'; expected float32, float16 (or uint8 for image outputs)");
}

DType dtype_from_dlpack(const TensorArg& t, const SdrtDLDataType& d) {
  if (d.lanes == 1) {
    if (d.code == kSdrtDLFloat && d.bits == 32) return DType::kFloat32;
    if (d.code == kSdrtDLFloat && d.bits == 16) return DType::kFloat16;
    if (d.code == kSdrtDLBfloat && d.bits == 16) return DType::kBFloat16;
    if (d.code == kSdrtDLUInt && d.bits == 8) return DType::kUInt8;
  }
  raise_type_error(t.where() + " has unsupported DLPack dtype (code " + std::to_string(d.code) +
                   ", bits " + std::to_string(d.bits) + ", lanes " + std::to_string(d.lanes) +
                   "); expected float32, float16, bfloat16 (or uint8 for image outputs)");
}

void from_buffer(TensorArg& t, py::handle obj, bool writable) {
  auto view = std::make_shared<Py_buffer>();
  const int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
  if (PyObject_GetBuffer(obj.ptr(), view.get(), flags) != 0) {
    PyErr_Clear();
    raise_value_error(t.where() + (writable ? " must be a writable buffer (it is read-only or not a buffer)"
                                            : " could not be read as a buffer"));
  }
  t.keepalive = std::shared_ptr<void>(view.get(), [view](void*) { PyBuffer_Release(view.get()); });
  t.data = view->buf;
  t.dtype = dtype_from_format(t, view->format ? view->format : "B", view->itemsize);
  t.shape.assign(view->shape, view->shape + view->ndim);
  std::vector<int64_t> strides(view->ndim);
  for (int i = 0; i < view->ndim; ++i) {
    if (view->strides[i] % view->itemsize != 0) raise_value_error(t.where() + " has unaligned strides");
    strides[i] = view->strides[i] / view->itemsize;
  }
  check_row_major(t, strides);
}

void from_dlpack_capsule(TensorArg& t, py::handle capsule) {
  auto* managed = static_cast<SdrtDLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
  if (managed == nullptr) {
    PyErr_Clear();
    raise_value_error(t.where() + " is a DLPack capsule that was already consumed");
  }
  // Borrowed: the capsule keeps ownership and frees the tensor when it is collected.
  t.keepalive = std::shared_ptr<void>(new py::object(py::reinterpret_borrow<py::object>(capsule)),
                                      [](void* p) { delete static_cast<py::object*>(p); });
  const SdrtDLTensor& dl = managed->dl_tensor;
  if (dl.device.device_type == kSdrtDLCPU || dl.device.device_type == kSdrtDLCUDAHost) {
    t.on_cuda = false;
  } else if (dl.device.device_type == kSdrtDLCUDA) {
    t.on_cuda = true;
    t.device_id = dl.device.device_id;
  } else {
    raise_value_error(t.where() + " lives on an unsupported device type " + std::to_string(dl.device.device_type) +
                      "; sdrt kernels take CPU or CUDA tensors");
  }
  t.dtype = dtype_from_dlpack(t, dl.dtype);
  t.shape.assign(dl.shape, dl.shape + dl.ndim);
  t.data = static_cast<char*>(dl.data) + dl.byte_offset;
  if (dl.strides != nullptr) check_row_major(t, std::vector<int64_t>(dl.strides, dl.strides + dl.ndim));
}

// torch tensors: torch's C-level to_dlpack (~0.15 us) instead of Tensor.__dlpack__ (~1.7 us, Python
// code), which counts in the C++ sampler loop's several calls per step. Looked up once torch is loaded.
py::object torch_capsule(py::handle obj) {
  static PyObject* tensor_type = nullptr;
  static PyObject* to_dlpack = nullptr;
  if (tensor_type == nullptr) {
    PyObject* torch = PyImport_GetModule(py::str("torch").ptr());  // only if already imported
    if (torch == nullptr) {
      PyErr_Clear();
      return py::object();
    }
    py::module_ dlpack = py::module_::import("torch.utils.dlpack");
    to_dlpack = py::object(dlpack.attr("to_dlpack")).release().ptr();  // kept for the process's lifetime
    tensor_type = PyObject_GetAttrString(torch, "Tensor");
    Py_DECREF(torch);
    if (tensor_type == nullptr) throw py::error_already_set();
  }
  const int is_tensor = PyObject_IsInstance(obj.ptr(), tensor_type);
  if (is_tensor < 0) throw py::error_already_set();
  if (is_tensor == 0) return py::object();
  return py::reinterpret_borrow<py::object>(to_dlpack)(obj);
}

}  // namespace

TensorArg tensor_arg(py::handle obj, const std::string& fn, const std::string& name, bool writable) {
  TensorArg t;
  t.fn = fn;
  t.name = name;
  if (obj.is_none()) raise_type_error(t.where() + " is None; expected an array or tensor");
  if (PyCapsule_CheckExact(obj.ptr())) {
    from_dlpack_capsule(t, obj);
  } else if (PyObject_CheckBuffer(obj.ptr())) {
    from_buffer(t, obj, writable);
  } else if (py::object capsule = torch_capsule(obj); capsule) {
    from_dlpack_capsule(t, capsule);
  } else if (py::hasattr(obj, "__dlpack__")) {
    py::object dl = obj.attr("__dlpack__")();
    from_dlpack_capsule(t, dl);
  } else {
    raise_type_error(t.where() + " has type " + std::string(py::str(py::type::of(obj).attr("__name__"))) +
                     "; expected a NumPy array, a DLPack capsule or a tensor with __dlpack__");
  }
  for (int64_t d : t.shape) t.numel *= d;
  return t;
}

void check_like(const TensorArg& a, const TensorArg& ref) {
  if (a.on_cuda != ref.on_cuda || a.device_id != ref.device_id)
    raise_value_error(a.where() + " is on " + (a.on_cuda ? "cuda:" + std::to_string(a.device_id) : "cpu") +
                      " but '" + ref.name + "' is on " +
                      (ref.on_cuda ? "cuda:" + std::to_string(ref.device_id) : "cpu"));
  if (a.dtype != ref.dtype)
    raise_type_error(a.where() + " has dtype " + dtype_name(a.dtype) + " but '" + ref.name + "' has dtype " +
                     dtype_name(ref.dtype));
  if (a.shape != ref.shape)
    raise_value_error(a.where() + " has shape " + a.shape_str() + " but '" + ref.name + "' has shape " +
                      ref.shape_str());
}

void check_float(const TensorArg& a) {
  if (a.dtype == DType::kUInt8)
    raise_type_error(a.where() + " has dtype uint8; expected float32, float16 or bfloat16");
}

void check_no_partial_overlap(const TensorArg& out, const TensorArg& in) {
  const char* o = static_cast<const char*>(out.data);
  const char* i = static_cast<const char*>(in.data);
  if (o == i && out.nbytes() == in.nbytes()) return;
  if (o < i + in.nbytes() && i < o + out.nbytes())
    raise_value_error(out.where() + " partially overlaps '" + in.name +
                      "'; pass the same tensor for an in-place update, or a separate one");
}

}  // namespace sdrt
