// DLPack ABI (https://dmlc.github.io/dlpack/latest/), the legacy unversioned capsule layout that
// torch.utils.dlpack.to_dlpack and Tensor.__dlpack__() produce. Only the struct layout is declared
// here: it is a stable C ABI, so declaring it avoids a dependency for six plain structs.
#pragma once
#include <cstdint>

extern "C" {

enum SdrtDLDeviceType : int32_t {
  kSdrtDLCPU = 1,
  kSdrtDLCUDA = 2,
  kSdrtDLCUDAHost = 3,
};

enum SdrtDLDataTypeCode : uint8_t {
  kSdrtDLInt = 0,
  kSdrtDLUInt = 1,
  kSdrtDLFloat = 2,
  kSdrtDLBfloat = 4,
};

struct SdrtDLDevice {
  int32_t device_type;
  int32_t device_id;
};

struct SdrtDLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};

struct SdrtDLTensor {
  void* data;
  SdrtDLDevice device;
  int32_t ndim;
  SdrtDLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements; NULL means compact row-major
  uint64_t byte_offset;
};

struct SdrtDLManagedTensor {
  SdrtDLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(SdrtDLManagedTensor* self);
};

}  // extern "C"
