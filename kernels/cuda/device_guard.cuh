// Switches to a device for a launch and back afterwards, so the caller's (torch's) current device
// is what it was.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace sdrt::cuda {

struct DeviceGuard {
  int previous = 0;
  explicit DeviceGuard(int device) {
    cudaGetDevice(&previous);
    const cudaError_t err = cudaSetDevice(device);
    if (err != cudaSuccess) throw std::runtime_error(std::string("cudaSetDevice: ") + cudaGetErrorString(err));
  }
  ~DeviceGuard() { cudaSetDevice(previous); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
};

}  // namespace sdrt::cuda
