// CRC-32 (zlib's) of a tensor's bytes, continuing `crc`: what a training state stores to find
// damaged files, and what data-parallel ranks compare to prove their replicas identical.
#pragma once
#include <torch/types.h>

#include <cstdint>

namespace exfusion {

uint32_t crc32_of(const torch::Tensor& tensor, uint32_t crc = 0);

}  // namespace exfusion
