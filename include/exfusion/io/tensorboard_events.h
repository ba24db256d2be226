// TensorBoard event files, written without TensorFlow or a protobuf library: each record is
// TFRecord-framed (length, masked CRC-32C of the length, data, masked CRC-32C of the data) and
// holds an Event protobuf, encoded here field by field; the first record names the version.
#pragma once
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <string>
#include <string_view>

#include "exfusion/util/append_only_file.h"

namespace exfusion {
namespace tensorboard {

// CRC-32C (Castagnoli) as TFRecord uses it, and its masked form ((crc >> 15 | crc << 17) +
// 0xa282ead8) that the framing stores.
uint32_t crc32c(std::string_view data);
uint32_t masked_crc32c(std::string_view data);

// Protobuf wire encoding: a base-128 varint (an int64 is written as its two's complement).
void append_varint(std::string& out, uint64_t value);

// `data` framed as one TFRecord: uint64 length, masked CRC of those 8 bytes, data, masked CRC
// of the data, little-endian.
std::string tfrecord(std::string_view data);

// Event{wall_time, file_version: "brain.Event:2"}: the record an event file starts with.
std::string file_version_event(double wall_time);
// Event{wall_time, step, summary: Summary{value: [Value{tag, simple_value}]}}.
std::string scalar_event(std::string_view tag, float value, int64_t step, double wall_time);

// `events.out.tfevents.<unix seconds>.<host>`, the name TensorBoard looks for.
std::string event_file_name(std::time_t unix_seconds, const std::string& host);
// The current time as TensorBoard's wall_time: seconds since the epoch.
double wall_time_now();

}  // namespace tensorboard

// Appends scalar events to one event file. Records are collected in memory and written by
// flush() in a single write, so TensorBoard (reading while training runs) sees whole records;
// the file gets its file_version record when it is created (or found empty).
class TensorBoardWriter {
 public:
  // Creates the file or appends to it; throws InputError when it cannot be opened.
  explicit TensorBoardWriter(const std::filesystem::path& path);

  // Queues one scalar (stored as a float, as TensorBoard's simple_value is).
  void add_scalar(std::string_view tag, double value, int64_t step, double wall_time);
  // Writes the queued records. Throws InputError when the write fails (a full disk).
  void flush();
  // The file's size in bytes (records not flushed yet not counted), and cutting it back to
  // `bytes`, which drops the queued records too. Throws InputError when the file is shorter.
  int64_t size() const { return file_.size(); }
  void truncate(int64_t bytes);
  const std::filesystem::path& path() const { return file_.path(); }

 private:
  AppendOnlyFile file_;
  std::string pending_;
};

}  // namespace exfusion
