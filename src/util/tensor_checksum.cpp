// crc32_of (see tensor_checksum.h), in chunks below zlib's 4 GiB length limit.
#include "exfusion/util/tensor_checksum.h"

#include <zlib.h>

#include <algorithm>

namespace exfusion {

uint32_t crc32_of(const torch::Tensor& tensor, uint32_t crc) {
  const auto bytes = tensor.to(torch::kCPU).contiguous();
  const auto* data = static_cast<const Bytef*>(bytes.data_ptr());
  uLong value = crc;
  for (size_t done = 0, size = bytes.nbytes(); done < size;) {
    const auto chunk = static_cast<uInt>(std::min<size_t>(size - done, 1u << 30));
    value = crc32(value, data + done, chunk);
    done += chunk;
  }
  return static_cast<uint32_t>(value);
}

}  // namespace exfusion
