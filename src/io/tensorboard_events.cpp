// TensorBoard event files (see tensorboard_events.h). Fields are written as protobuf's own
// serializer writes them: in field order, zero-valued plain fields left out, oneof members
// (file_version, summary, simple_value) always written, so our records equal its bytes.
#include "exfusion/io/tensorboard_events.h"

#include <boost/crc.hpp>
#include <chrono>
#include <cstring>

namespace exfusion {
namespace tensorboard {
namespace {

// Wire types of a field's key (field number << 3 | wire type).
constexpr uint32_t kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5;

void append_key(std::string& out, uint32_t field, uint32_t wire_type) {
  append_varint(out, (field << 3) | wire_type);
}

void append_little_endian(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

void append_double(std::string& out, uint32_t field, double value) {
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  if (bits == 0) return;  // +0.0, the default
  append_key(out, field, kFixed64);
  append_little_endian(out, bits, 8);
}

void append_bytes(std::string& out, uint32_t field, std::string_view bytes) {
  append_key(out, field, kLengthDelimited);
  append_varint(out, bytes.size());
  out.append(bytes);
}

// Event's fields up to `what` (wall_time = 1, step = 2).
std::string event_header(double wall_time, int64_t step) {
  std::string event;
  append_double(event, 1, wall_time);
  if (step != 0) {
    append_key(event, 2, kVarint);
    append_varint(event, static_cast<uint64_t>(step));
  }
  return event;
}

}  // namespace

uint32_t crc32c(std::string_view data) {
  boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
  crc.process_bytes(data.data(), data.size());
  return crc.checksum();
}

uint32_t masked_crc32c(std::string_view data) {
  const uint32_t crc = crc32c(data);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

void append_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

std::string tfrecord(std::string_view data) {
  std::string length;
  append_little_endian(length, data.size(), 8);
  std::string record = length;
  append_little_endian(record, masked_crc32c(length), 4);
  record.append(data);
  append_little_endian(record, masked_crc32c(data), 4);
  return record;
}

std::string file_version_event(double wall_time) {
  auto event = event_header(wall_time, 0);
  append_bytes(event, 3, "brain.Event:2");
  return event;
}

std::string scalar_event(std::string_view tag, float value, int64_t step, double wall_time) {
  std::string summary_value;
  if (!tag.empty()) append_bytes(summary_value, 1, tag);
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  append_key(summary_value, 2, kFixed32);
  append_little_endian(summary_value, bits, 4);
  std::string summary;
  append_bytes(summary, 1, summary_value);
  auto event = event_header(wall_time, step);
  append_bytes(event, 5, summary);
  return event;
}

std::string event_file_name(std::time_t unix_seconds, const std::string& host) {
  return "events.out.tfevents." + std::to_string(static_cast<long long>(unix_seconds)) + "." + host;
}

double wall_time_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace tensorboard

TensorBoardWriter::TensorBoardWriter(const std::filesystem::path& path)
    : file_(path, "the TensorBoard event file") {
  if (file_.size() == 0) {
    pending_ = tensorboard::tfrecord(tensorboard::file_version_event(tensorboard::wall_time_now()));
    flush();
  }
}

void TensorBoardWriter::add_scalar(std::string_view tag, double value, int64_t step,
                                   double wall_time) {
  pending_ += tensorboard::tfrecord(
      tensorboard::scalar_event(tag, static_cast<float>(value), step, wall_time));
}

void TensorBoardWriter::flush() {
  file_.append(pending_);
  pending_.clear();
}

void TensorBoardWriter::truncate(int64_t bytes) {
  pending_.clear();
  file_.truncate(bytes);
}

}  // namespace exfusion
