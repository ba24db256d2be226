// IDX files (MNIST's format: two zero bytes, a type byte, a dimension count, big-endian
// dimensions, raw big-endian data), raw or gzip-compressed, decoded without LibTorch. The
// header is checked before any data is decompressed, so a gzip bomb or an absurd header
// costs nothing; the fuzz target runs this part alone.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace exfusion {

enum class IdxType : unsigned char {
  U8 = 0x08,
  I8 = 0x09,
  I16 = 0x0B,
  I32 = 0x0C,
  F32 = 0x0D,
  F64 = 0x0E
};

const char* idx_type_name(IdxType type);  // "uint8", ..., "float64"
size_t idx_element_size(IdxType type);

struct IdxArray {
  IdxType type;
  std::vector<int64_t> dims;
  std::vector<unsigned char> data;  // the values in this machine's byte order
};

// Decodes a whole IDX file given as its bytes (gzip when they start with the gzip magic).
// Throws InputError naming `where`: a bad magic, type or dimension count, a zero dimension,
// a header or data shorter than declared, bytes after the data (also after the end of a gzip
// stream), a damaged gzip stream, and data larger than `max_data_bytes`.
IdxArray decode_idx(std::string_view file, const std::string& where, uint64_t max_data_bytes);

}  // namespace exfusion
