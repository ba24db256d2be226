// The text reader: each way plain files split into documents, JSON Lines plain and gzipped
// (C4's shard layout), and bad input (an overlong line, invalid UTF-8, a record without its
// field, a truncated gzip stream) as an error naming file and line, or skipped and counted.
#include <gtest/gtest.h>
#include <zlib.h>

#include <fstream>
#include <string>
#include <vector>

#include "../support/cli.h"
#include "exfusion/text/text_reader.h"
#include "exfusion/util/error.h"

namespace exfusion {
namespace {
namespace fs = std::filesystem;

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

void write_gzip(const fs::path& path, const std::string& bytes) {
  gzFile out = gzopen(path.c_str(), "wb");
  gzwrite(out, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(out);
}

std::vector<std::string> documents_of(const fs::path& file, const TextReaderOptions& options,
                                      int64_t* skipped = nullptr) {
  TextFileReader reader(file, options);
  std::vector<std::string> texts;
  while (auto document = reader.next()) texts.push_back(document->text);
  if (skipped != nullptr) *skipped = reader.skipped();
  return texts;
}

// The error message of reading `file` whole, "" when there is none.
std::string error_of(const fs::path& file, const TextReaderOptions& options) {
  try {
    documents_of(file, options);
  } catch (const InputError& error) {
    return error.what();
  }
  return "";
}

class TextReader : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::fresh_temp_dir("text-reader"); }
  void TearDown() override { testing::remove_tree(dir_); }
  fs::path dir_;
};

TEST_F(TextReader, PlainFilesSplitIntoDocuments) {
  const auto file = dir_ / "corpus.txt";
  write_file(file, "one\ntwo\r\n\n  \nthree\n%\nfour\n");
  TextReaderOptions options;
  options.documents = DocumentSplit::kBlankLine;
  EXPECT_EQ(documents_of(file, options), (std::vector<std::string>{"one\ntwo", "three\n%\nfour"}));
  options.documents = DocumentSplit::kSeparator;
  EXPECT_EQ(documents_of(file, options),
            (std::vector<std::string>{"one\ntwo\n\n  \nthree", "four"}));
  options.documents = DocumentSplit::kLine;
  EXPECT_EQ(documents_of(file, options),
            (std::vector<std::string>{"one", "two", "  ", "three", "%", "four"}));
  options.documents = DocumentSplit::kFile;
  EXPECT_EQ(documents_of(file, options),
            (std::vector<std::string>{"one\ntwo\n\n  \nthree\n%\nfour"}));
}

TEST_F(TextReader, JsonLinesPlainAndGzipped) {
  const std::string records =
      "{\"text\": \"Beginners BBQ Class\", \"url\": \"https://example.com\"}\n"
      "\n"
      "{\"text\": \"second \\u00e9 document\", \"timestamp\": \"2019-04-25T12:57:54Z\"}\n";
  write_file(dir_ / "shard.jsonl", records);
  write_gzip(dir_ / "c4-train.00000-of-01024.json.gz", records);
  const std::vector<std::string> expected{"Beginners BBQ Class", "second \xc3\xa9 document"};
  EXPECT_EQ(documents_of(dir_ / "shard.jsonl", {}), expected);
  EXPECT_EQ(documents_of(dir_ / "c4-train.00000-of-01024.json.gz", {}), expected);
  TextReaderOptions other_field;
  other_field.text_field = "url";
  EXPECT_NE(
      error_of(dir_ / "shard.jsonl", other_field).find("shard.jsonl:3: no string field \"url\""),
      std::string::npos)
      << "the second record has no url";
}

TEST_F(TextReader, BadRecordsNameFileAndLineOrAreSkipped) {
  TextReaderOptions options;
  options.max_line_bytes = 16;
  const auto long_line = dir_ / "long.txt";
  write_file(long_line, "short\nthis line is far too long\nok\n");
  EXPECT_NE(error_of(long_line, options).find("long.txt:2: a line longer than"), std::string::npos)
      << error_of(long_line, options);

  const auto latin1 = dir_ / "latin1.txt";
  write_file(latin1, "fine\n\ncaf\xe9\n");
  EXPECT_NE(error_of(latin1, {}).find("latin1.txt:3: not UTF-8"), std::string::npos);

  const auto records = dir_ / "records.jsonl";
  write_file(records, "{\"text\": \"a\"}\n{\"body\": \"b\"}\nnot json\n{\"text\": \"c\"}\n");
  EXPECT_NE(error_of(records, {}).find("records.jsonl:2: no string field \"text\""),
            std::string::npos);

  // A bad line skips the document it is in: here each line is one.
  options.skip_bad_records = true;
  options.documents = DocumentSplit::kLine;
  int64_t skipped = 0;
  EXPECT_EQ(documents_of(long_line, options, &skipped), (std::vector<std::string>{"short", "ok"}));
  EXPECT_EQ(skipped, 1);
  TextReaderOptions skipping;
  skipping.skip_bad_records = true;
  EXPECT_EQ(documents_of(records, skipping, &skipped), (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(skipped, 2);
  EXPECT_EQ(documents_of(latin1, skipping, &skipped), (std::vector<std::string>{"fine"}));
  EXPECT_EQ(skipped, 1);
}

// A shard cut short in transfer: the documents before the cut, then an error (or one skip).
TEST_F(TextReader, TruncatedGzipIsAnError) {
  std::string records;
  for (int i = 0; i < 2000; ++i) records += "{\"text\": \"record " + std::to_string(i) + "\"}\n";
  const auto whole = dir_ / "whole.jsonl.gz";
  write_gzip(whole, records);
  std::ifstream in(whole, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto cut = dir_ / "cut.jsonl.gz";
  write_file(cut, bytes.substr(0, bytes.size() / 2));
  EXPECT_NE(error_of(cut, {}).find("cut.jsonl.gz:"), std::string::npos);
  EXPECT_NE(error_of(cut, {}).find("gzip stream is broken"), std::string::npos)
      << error_of(cut, {});
  TextReaderOptions skipping;
  skipping.skip_bad_records = true;
  int64_t skipped = 0;
  const auto read = documents_of(cut, skipping, &skipped);
  EXPECT_EQ(skipped, 1);
  EXPECT_GT(read.size(), 0U);
  EXPECT_LT(read.size(), 2000U);
}

TEST_F(TextReader, PathsExpandFilesFoldersAndGlobs) {
  fs::create_directories(dir_ / "nested" / "deeper");
  write_file(dir_ / "nested" / "b.txt", "b");
  write_file(dir_ / "nested" / "deeper" / "a.txt", "a");
  write_file(dir_ / "x.jsonl", "{}");
  write_file(dir_ / "y.jsonl", "{}");
  const auto files = expand_text_paths({(dir_ / "nested").string(), (dir_ / "*.jsonl").string()});
  ASSERT_EQ(files.size(), 4U);
  EXPECT_EQ(files[0].filename(), "b.txt");
  EXPECT_EQ(files[1].filename(), "a.txt");
  EXPECT_EQ(files[2].filename(), "x.jsonl");
  EXPECT_EQ(files[3].filename(), "y.jsonl");
  try {
    expand_text_paths({(dir_ / "none-*.txt").string()});
    FAIL() << "expected an error";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what()).find("none-*.txt: no such file"), std::string::npos);
  }
}

TEST(Utf8, AcceptsWellFormedAndRejectsTheRest) {
  EXPECT_TRUE(valid_utf8("plain ascii"));
  EXPECT_TRUE(valid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(valid_utf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(valid_utf8("\xed\xa0\x80"));      // a UTF-16 surrogate
  EXPECT_FALSE(valid_utf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(valid_utf8("\xe2\x82"));          // cut short
}

}  // namespace
}  // namespace exfusion
