// Fuzz target: an IDX file's bytes, raw or gzip, through the torch-free decoder with a 64 MiB
// data limit. Rejections are InputErrors; a result must hold exactly the declared data.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "exfusion/data/idx_format.h"
#include "exfusion/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto array = exfusion::decode_idx(
        std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.idx", 64 << 20);
    size_t count = exfusion::idx_element_size(array.type);
    for (const auto d : array.dims) count *= static_cast<size_t>(d);
    if (count != array.data.size()) std::abort();
  } catch (const exfusion::InputError&) {
  }
  return 0;
}
