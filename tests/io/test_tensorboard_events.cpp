// TensorBoard event files: CRC-32C against published check values, the protobuf varint, the
// exact bytes of framed events (as protobuf's serializer and TensorBoard's own writer produce
// them) and the writer's flush, size, truncation and reopening.
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <limits>

#include "../support/cli.h"
#include "exfusion/io/tensorboard_events.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {

namespace fs = std::filesystem;
using namespace tensorboard;

std::string from_hex(const std::string& hex) {
  std::string bytes;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return bytes;
}

std::string varint(uint64_t value) {
  std::string out;
  append_varint(out, value);
  return out;
}

// Event{wall_time: 1.5, step: 300, summary {value {tag: "train/loss", simple_value: 0.25}}},
// serialized by protobuf and framed by TensorBoard's writer (tensorboard 2.21).
const char* const kScalarEventHex =
    "09000000000000f83f10ac022a130a110a0a747261696e2f6c6f7373150000803e";
const char* const kScalarRecordHex =
    "2100000000000000017becf6"
    "09000000000000f83f10ac022a130a110a0a747261696e2f6c6f7373150000803e"
    "6557981f";

TEST(TensorBoardEvents, Crc32cMatchesTheCheckValues) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(""), 0u);
  // RFC 3720 (iSCSI) B.4: 32 bytes of zeros, of ones, ascending and descending.
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string ascending, descending;
  for (int i = 0; i < 32; ++i) {
    ascending.push_back(static_cast<char>(i));
    descending.push_back(static_cast<char>(31 - i));
  }
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(crc32c(descending), 0x113FDB5Cu);
  // TensorBoard's masked_crc32c(b"123456789").
  EXPECT_EQ(masked_crc32c("123456789"), 0xC78AB0E5u);
}

TEST(TensorBoardEvents, VarintsAreBase128LittleEndianGroups) {
  EXPECT_EQ(varint(0), from_hex("00"));
  EXPECT_EQ(varint(1), from_hex("01"));
  EXPECT_EQ(varint(127), from_hex("7f"));
  EXPECT_EQ(varint(128), from_hex("8001"));
  EXPECT_EQ(varint(300), from_hex("ac02"));
  EXPECT_EQ(varint(16384), from_hex("808001"));
  EXPECT_EQ(varint(std::numeric_limits<uint64_t>::max()), from_hex("ffffffffffffffffff01"));
  // An int64 -1 is its two's complement: ten bytes.
  EXPECT_EQ(varint(static_cast<uint64_t>(int64_t{-1})), from_hex("ffffffffffffffffff01"));
}

TEST(TensorBoardEvents, EventsAndRecordsHaveProtobufsBytes) {
  EXPECT_EQ(scalar_event("train/loss", 0.25f, 300, 1.5), from_hex(kScalarEventHex));
  EXPECT_EQ(tfrecord(from_hex(kScalarEventHex)), from_hex(kScalarRecordHex));
  EXPECT_EQ(file_version_event(1.5), from_hex("09000000000000f83f1a0d627261696e2e4576656e743a32"));
  // Step 0 is protobuf's default and left out; a simple_value of 0 (a oneof member) is not.
  EXPECT_EQ(scalar_event("a", 0.0f, 0, 2.0),
            from_hex("0900000000000000402a0a0a080a01611500000000"));
}

TEST(TensorBoardEvents, FileNameIsTheOneTensorBoardLooksFor) {
  EXPECT_EQ(event_file_name(1700000000, "node7"), "events.out.tfevents.1700000000.node7");
}

TEST(TensorBoardEvents, WriterFlushesWholeRecordsAndCutsBack) {
  const auto dir = testing::fresh_temp_dir("tensorboard-writer");
  const auto path = dir / event_file_name(1700000000, "host");
  int64_t header = 0;
  {
    TensorBoardWriter writer(path);
    // A new file starts with its file_version record (written at once).
    header = writer.size();
    const auto bytes = testing::read_text(path);
    ASSERT_EQ(static_cast<int64_t>(bytes.size()), header);
    const auto version = bytes.substr(12, bytes.size() - 16);
    EXPECT_EQ(bytes, tfrecord(version));
    EXPECT_NE(version.find("brain.Event:2"), std::string::npos);

    writer.add_scalar("train/loss", 0.25, 300, 1.5);
    EXPECT_EQ(writer.size(), header);  // queued, not written
    writer.flush();
    EXPECT_EQ(testing::read_text(path), bytes + from_hex(kScalarRecordHex));
    writer.add_scalar("train/lr", 1e-3, 301, 1.5);
    writer.truncate(header);  // drops the queued record too
    writer.flush();
    EXPECT_EQ(testing::read_text(path), bytes);
    EXPECT_THROW(writer.truncate(header + 1), InputError);
  }
  {
    // Reopened (a resumed run): appends after what is there, with no second header.
    TensorBoardWriter writer(path);
    EXPECT_EQ(writer.size(), header);
    writer.add_scalar("train/loss", 0.25, 300, 1.5);
    writer.flush();
    EXPECT_EQ(writer.size(), header + static_cast<int64_t>(from_hex(kScalarRecordHex).size()));
    EXPECT_EQ(testing::read_text(path).substr(header), from_hex(kScalarRecordHex));
  }
  EXPECT_THROW(TensorBoardWriter(dir / "missing" / "events.out.tfevents.1.host"), InputError);
  testing::remove_tree(dir);
}

}  // namespace
}  // namespace exfusion
