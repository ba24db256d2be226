// IDX decoding (see idx_format.h). Gzip input is inflated incrementally through zlib: the
// header first, then exactly the data it declares, then a check that nothing follows, so
// memory never exceeds what the header promised and the input really holds.
#include "exfusion/data/idx_format.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "exfusion/util/error.h"
#include "exfusion/util/shape_text.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "IDX decoding assumes little-endian");

namespace exfusion {
namespace {

std::string hex(uint32_t value, int digits) {
  std::ostringstream out;
  out << "0x" << std::hex << std::setfill('0') << std::setw(digits) << value;
  return out.str();
}

uint32_t big_endian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

bool is_gzip(std::string_view bytes) {
  return bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
         static_cast<unsigned char>(bytes[1]) == 0x8b;
}

// The file's content as a stream of bytes: the raw bytes, or the gzip members inflated one
// after another. Anything after the last member that is not another member is an error.
class ByteSource {
 public:
  ByteSource(std::string_view file, std::string where)
      : file_(file), where_(std::move(where)), gzip_(is_gzip(file)) {
    if (!gzip_) return;
    stream_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(file_.data()));
    stream_.avail_in = static_cast<uInt>(std::min<size_t>(file_.size(), kMaxChunk));
    consumed_ = stream_.avail_in;
    if (inflateInit2(&stream_, 16 + MAX_WBITS) != Z_OK) {
      throw InputError(where_ + ": cannot start decompressing (zlib out of memory)");
    }
    started_ = true;
  }
  ~ByteSource() {
    if (started_) inflateEnd(&stream_);
  }
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  // Up to `size` bytes into `out`; fewer only at the end of the content.
  size_t read(unsigned char* out, size_t size) {
    if (!gzip_) {
      const size_t count = std::min(size, file_.size() - position_);
      std::copy_n(file_.data() + position_, count, out);
      position_ += count;
      return count;
    }
    size_t done = 0;
    while (done < size && !finished_) {
      stream_.next_out = out + done;
      stream_.avail_out = static_cast<uInt>(std::min<size_t>(size - done, kMaxChunk));
      const auto before = stream_.avail_out;
      const int code = inflate(&stream_, Z_NO_FLUSH);
      done += before - stream_.avail_out;
      refill();
      if (code == Z_STREAM_END) {
        next_member();
      } else if (code == Z_BUF_ERROR && stream_.avail_in == 0) {
        throw InputError(where_ + ": cannot decompress (the gzip stream ends early), expected " +
                         "a complete gzip stream");
      } else if (code != Z_OK && code != Z_BUF_ERROR) {
        throw InputError(
            where_ + ": cannot decompress (" +
            (stream_.msg ? std::string(stream_.msg) : "zlib error " + std::to_string(code)) +
            "), expected a complete gzip stream");
      }
    }
    return done;
  }

 private:
  static constexpr size_t kMaxChunk = 1 << 30;  // zlib counts in 32-bit uInt

  void refill() {
    if (stream_.avail_in == 0 && consumed_ < file_.size()) {
      stream_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(file_.data() + consumed_));
      stream_.avail_in = static_cast<uInt>(std::min<size_t>(file_.size() - consumed_, kMaxChunk));
      consumed_ += stream_.avail_in;
    }
  }

  // After a member ends: another member follows, or the file ends, or it is an error.
  void next_member() {
    const size_t offset = consumed_ - stream_.avail_in;
    const auto rest = file_.substr(offset);
    if (rest.empty()) {
      finished_ = true;
    } else if (is_gzip(rest)) {
      inflateReset(&stream_);
    } else {
      throw InputError(where_ + ": " + std::to_string(rest.size()) +
                       " bytes after the end of the gzip stream, expected the file to end there");
    }
  }

  std::string_view file_;
  std::string where_;
  bool gzip_;
  size_t position_ = 0;  // raw files
  z_stream stream_{};
  size_t consumed_ = 0;  // bytes of the file handed to zlib so far
  bool started_ = false;
  bool finished_ = false;
};

struct TypeInfo {
  IdxType type;
  const char* name;
  size_t size;
};

constexpr std::array<TypeInfo, 6> kTypes = {{{IdxType::U8, "uint8", 1},
                                             {IdxType::I8, "int8", 1},
                                             {IdxType::I16, "int16", 2},
                                             {IdxType::I32, "int32", 4},
                                             {IdxType::F32, "float32", 4},
                                             {IdxType::F64, "float64", 8}}};

const TypeInfo* find_type(unsigned char code) {
  for (const auto& info : kTypes) {
    if (static_cast<unsigned char>(info.type) == code) return &info;
  }
  return nullptr;
}

}  // namespace

const char* idx_type_name(IdxType type) {
  return find_type(static_cast<unsigned char>(type))->name;
}
size_t idx_element_size(IdxType type) { return find_type(static_cast<unsigned char>(type))->size; }

IdxArray decode_idx(std::string_view file, const std::string& where, uint64_t max_data_bytes) {
  ByteSource source(file, where);
  unsigned char magic_bytes[4];
  const size_t got = source.read(magic_bytes, 4);
  if (got < 4) {
    throw InputError(where + ": " + std::to_string(got) +
                     " bytes, too short for the 4-byte IDX magic");
  }
  const uint32_t magic = big_endian32(magic_bytes);
  if (magic_bytes[0] != 0 || magic_bytes[1] != 0) {
    throw InputError(where + ": IDX magic " + hex(magic, 8) +
                     ", expected 0x0000TTNN (two zero bytes, type TT, NN dims): not an IDX file");
  }
  const auto* type = find_type(magic_bytes[2]);
  if (type == nullptr) {
    throw InputError(where + ": IDX magic " + hex(magic, 8) + " has type byte " +
                     hex(magic_bytes[2], 2) +
                     ", expected 0x08 (uint8), 0x09 (int8), 0x0B (int16), 0x0C (int32), 0x0D "
                     "(float32) or 0x0E (float64)");
  }
  const size_t ndims = magic_bytes[3];
  if (ndims == 0) {
    throw InputError(where + ": IDX magic " + hex(magic, 8) +
                     " declares 0 dimensions, expected at least 1");
  }
  std::vector<unsigned char> dim_bytes(4 * ndims);
  const size_t dims_got = source.read(dim_bytes.data(), dim_bytes.size());
  if (dims_got < dim_bytes.size()) {
    throw InputError(where + ": truncated IDX header: " + std::to_string(ndims) + " dims need " +
                     std::to_string(4 + dim_bytes.size()) + " bytes, the file has " +
                     std::to_string(4 + dims_got));
  }
  IdxArray array{type->type, {}, {}};
  long double wanted = type->size;  // a bad header can overflow 64 bits
  for (size_t i = 0; i < ndims; ++i) {
    const uint32_t d = big_endian32(&dim_bytes[4 * i]);
    if (d == 0) throw InputError(where + ": dimension " + std::to_string(i) + " is 0");
    array.dims.push_back(d);
    wanted *= d;
  }
  const auto describe_wanted = [&] {
    std::ostringstream text;
    text << "shape " << shape_text(array.dims) << " of " << type->name << " needs " << std::fixed
         << std::setprecision(0) << wanted << " data bytes";
    return text.str();
  };
  // Data stored raw is all there: a short file is truncated whatever the limit.
  const long double stored = file.size() - 4 - dim_bytes.size();
  if (!is_gzip(file) && wanted > stored) {
    throw InputError(where + ": truncated: " + describe_wanted() + ", the file has " +
                     std::to_string(static_cast<uint64_t>(stored)) + " after the header");
  }
  if (wanted > static_cast<long double>(max_data_bytes)) {
    throw InputError(where + ": " + describe_wanted() + ", more than the " +
                     std::to_string(max_data_bytes) + " bytes of memory this reader may use");
  }
  const auto data_bytes = static_cast<size_t>(wanted);

  // Grown as data arrives, so a header that promises more than the stream holds costs only
  // what the stream holds.
  constexpr size_t kChunk = 1 << 20;
  size_t have = 0;
  while (have < data_bytes) {
    const size_t step = std::min(kChunk, data_bytes - have);
    array.data.resize(have + step);
    const size_t count = source.read(array.data.data() + have, step);
    have += count;
    if (count < step) {
      throw InputError(where + ": truncated: " + describe_wanted() + ", the file has " +
                       std::to_string(have) + " after the header");
    }
  }
  // Counting what follows stops somewhere: enough to say how much, not to inflate a bomb.
  constexpr size_t kCountedExtra = 1 << 24;
  std::vector<unsigned char> scratch(std::min<size_t>(kChunk, kCountedExtra));
  size_t extra = 0;
  for (size_t count = 0;
       extra < kCountedExtra && (count = source.read(scratch.data(), scratch.size())) > 0;) {
    extra += count;
  }
  if (extra > 0) {
    const auto amount =
        extra >= kCountedExtra ? "at least " + std::to_string(extra) : std::to_string(extra);
    throw InputError(where + ": " + amount + " unexpected byte" + (extra == 1 ? "" : "s") +
                     " after the data of shape " + shape_text(array.dims) +
                     ", expected the file to end there");
  }
  if (type->size > 1) {
    // IDX values are big-endian and this machine is little-endian.
    for (size_t i = 0; i < data_bytes; i += type->size) {
      std::reverse(array.data.begin() + static_cast<std::ptrdiff_t>(i),
                   array.data.begin() + static_cast<std::ptrdiff_t>(i + type->size));
    }
  }
  return array;
}

}  // namespace exfusion
