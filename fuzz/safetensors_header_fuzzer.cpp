// Fuzz target: a whole safetensors file (length prefix, header, data) through the checks that
// run before any tensor is allocated. Any input may be rejected with InputError; nothing may
// crash, read out of bounds, or accept a table that does not tile the data buffer exactly.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "exfusion/io/safetensors_header.h"
#include "exfusion/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  unsigned char prefix[8];
  for (int i = 0; i < 8; ++i) prefix[i] = data[i];
  try {
    const uint64_t length = exfusion::checked_header_length(prefix, size, "fuzz.safetensors");
    const std::string_view text(reinterpret_cast<const char*>(data) + 8, length);
    const uint64_t buffer_size = size - 8 - length;
    const auto header = exfusion::parse_safetensors_header(text, buffer_size, "fuzz.safetensors");
    uint64_t covered = 0;
    for (const auto& entry : header.entries) {
      // What the loader relies on: entries in order, tiling the buffer, sizes consistent.
      if (entry.begin != covered || entry.end > buffer_size) std::abort();
      covered = entry.end;
      if (entry.dtype == exfusion::SafetensorsDtype::BOOL) {
        exfusion::check_bool_bytes(data + 8 + length + entry.begin, entry.end - entry.begin,
                                   "fuzz.safetensors", entry.name);
      }
    }
    if (covered != buffer_size) std::abort();
  } catch (const exfusion::InputError&) {
  }
  return 0;
}
