// Streaming text and JSON Lines reader (see text_reader.h).
#include "exfusion/text/text_reader.h"

#include <glob.h>

#include <algorithm>
#include <system_error>

#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"

namespace exfusion {
namespace fs = std::filesystem;
namespace {

constexpr size_t kReadChunk = 1 << 16;

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The byte after a lead byte must be a continuation byte within [low, high].
bool continuation(std::string_view text, size_t at, unsigned char low = 0x80,
                  unsigned char high = 0xBF) {
  if (at >= text.size()) return false;
  const auto byte = static_cast<unsigned char>(text[at]);
  return byte >= low && byte <= high;
}

}  // namespace

bool valid_utf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    if (lead < 0x80) {
      ++i;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
      if (!continuation(text, i + 1)) return false;
      i += 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      // E0 excludes overlong forms, ED the UTF-16 surrogates.
      const unsigned char low = lead == 0xE0 ? 0xA0 : 0x80;
      const unsigned char high = lead == 0xED ? 0x9F : 0xBF;
      if (!continuation(text, i + 1, low, high) || !continuation(text, i + 2)) return false;
      i += 3;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      // F0 excludes overlong forms, F4 values past U+10FFFF.
      const unsigned char low = lead == 0xF0 ? 0x90 : 0x80;
      const unsigned char high = lead == 0xF4 ? 0x8F : 0xBF;
      if (!continuation(text, i + 1, low, high) || !continuation(text, i + 2) ||
          !continuation(text, i + 3)) {
        return false;
      }
      i += 4;
    } else {
      return false;
    }
  }
  return true;
}

TextFormat text_format_of(const fs::path& file, const TextReaderOptions& options) {
  if (options.format != TextFormat::kAuto) return options.format;
  auto name = file.filename().string();
  if (ends_with(name, ".bin")) return TextFormat::kTokens;
  if (ends_with(name, ".gz")) name.resize(name.size() - 3);
  return ends_with(name, ".jsonl") || ends_with(name, ".json") ? TextFormat::kJsonLines
                                                               : TextFormat::kPlain;
}

std::vector<fs::path> expand_text_paths(const std::vector<std::string>& patterns) {
  std::vector<fs::path> files;
  for (const auto& pattern : patterns) {
    std::vector<fs::path> found;
    std::error_code error;
    if (fs::is_directory(pattern, error)) {
      for (const auto& entry : fs::recursive_directory_iterator(pattern, error)) {
        if (entry.is_regular_file(error)) found.push_back(entry.path());
      }
    } else if (fs::exists(pattern, error)) {
      found.emplace_back(pattern);
    } else {
      glob_t matches{};
      if (::glob(pattern.c_str(), GLOB_BRACE, nullptr, &matches) == 0) {
        for (size_t i = 0; i < matches.gl_pathc; ++i) {
          if (fs::is_regular_file(matches.gl_pathv[i], error)) {
            found.emplace_back(matches.gl_pathv[i]);
          }
        }
      }
      ::globfree(&matches);
    }
    if (found.empty()) {
      throw InputError(pattern + ": no such file, folder or matching files");
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

TextFileReader::TextFileReader(fs::path file, TextReaderOptions options)
    : file_(std::move(file)),
      options_(std::move(options)),
      format_(text_format_of(file_, options_)) {
  if (format_ == TextFormat::kTokens) {
    throw InputError(file_.string() + ": a token file, not text (TokenFileReader reads it)");
  }
  // gzopen reads gzip and plain files alike.
  stream_ = gzopen(file_.c_str(), "rb");
  if (stream_ == nullptr) throw InputError(file_.string() + ": cannot be opened");
  gzbuffer(stream_, kReadChunk);
}

TextFileReader::~TextFileReader() {
  if (stream_ != nullptr) gzclose(stream_);
}

void TextFileReader::bad_record(int64_t line, const std::string& problem) {
  if (!options_.skip_bad_records) {
    throw InputError(file_.string() + ":" + std::to_string(line) + ": " + problem +
                     " (data.skip_bad_records skips such records)");
  }
  ++skipped_;
}

std::optional<std::string> TextFileReader::read_line() {
  const auto cap = static_cast<size_t>(options_.max_line_bytes);
  bool overlong = false;
  for (;;) {
    const auto newline = buffer_.find('\n', buffer_start_);
    if (newline != std::string::npos || at_end_) {
      if (newline == std::string::npos && buffer_start_ == buffer_.size()) {
        if (!overlong) return std::nullopt;
      }
      const auto end = newline == std::string::npos ? buffer_.size() : newline;
      ++line_;
      std::string line = buffer_.substr(buffer_start_, end - buffer_start_);
      buffer_start_ = newline == std::string::npos ? buffer_.size() : newline + 1;
      last_line_bad_ = overlong || line.size() > cap;
      if (last_line_bad_) {
        bad_record(line_, "a line longer than data.max_line_bytes = " + std::to_string(cap));
        return std::string();  // skipped: the caller drops its record
      }
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return line;
    }
    if (buffer_.size() - buffer_start_ > cap) {
      // Over the cap with no newline yet: drop what is held and keep reading to the line's end.
      overlong = true;
      buffer_.clear();
      buffer_start_ = 0;
    }
    if (buffer_start_ > 0) {
      buffer_.erase(0, buffer_start_);
      buffer_start_ = 0;
    }
    const auto held = buffer_.size();
    buffer_.resize(held + kReadChunk);
    const int got = gzread(stream_, buffer_.data() + held, static_cast<unsigned>(kReadChunk));
    if (got < 0) {
      int code = 0;
      const std::string message = gzerror(stream_, &code);
      buffer_.resize(held);
      bad_record(line_ + 1, "the gzip stream is broken (" + message + ")");
      at_end_ = true;  // skipped: nothing after a broken stream can be trusted
      buffer_.clear();
      buffer_start_ = 0;
      return std::nullopt;
    }
    buffer_.resize(held + static_cast<size_t>(got));
    if (got == 0) {
      // gzread reports a truncated gzip member as the end of the data with an error set.
      int code = Z_OK;
      const std::string message = gzerror(stream_, &code);
      at_end_ = true;
      if (code != Z_OK && code != Z_STREAM_END) {
        bad_record(line_ + 1, "the gzip stream is broken (" + message + ")");
        buffer_.clear();
        buffer_start_ = 0;
        return std::nullopt;
      }
    }
  }
}

std::optional<TextDocument> TextFileReader::next() {
  return format_ == TextFormat::kJsonLines ? next_json_record() : next_plain_document();
}

std::optional<TextDocument> TextFileReader::next_json_record() {
  while (auto line = read_line()) {
    const auto at = line_;
    if (line->find_first_not_of(" \t") == std::string::npos) continue;  // blank or skipped
    nlohmann::json record;
    try {
      record = parse_json_input(*line, file_.string() + ":" + std::to_string(at));
    } catch (const InputError& error) {
      bad_record(at, std::string("not a JSON record: ") + error.what());
      continue;
    }
    const auto field = record.is_object() ? record.find(options_.text_field) : record.end();
    if (!record.is_object() || field == record.end() || !field->is_string()) {
      bad_record(at, "no string field \"" + options_.text_field + "\" (data.text_field)");
      continue;
    }
    auto text = field->get<std::string>();
    if (!text.empty()) return TextDocument{std::move(text), at};
  }
  return std::nullopt;
}

std::optional<TextDocument> TextFileReader::next_plain_document() {
  TextDocument document;
  bool bad = false;
  const auto finish = [&]() -> bool {
    const bool keep = !bad && !document.text.empty();
    if (!keep) {
      document = TextDocument{};
      bad = false;
    }
    return keep;
  };
  const auto cap = static_cast<size_t>(options_.max_document_bytes);
  while (auto line = read_line()) {
    if (!last_line_bad_ && !valid_utf8(*line)) {
      bad_record(line_, "not UTF-8 text");
      last_line_bad_ = true;
    }
    if (last_line_bad_) {
      bad = options_.documents != DocumentSplit::kLine;  // a line is its own document
      continue;
    }
    const bool ends_document =
        (options_.documents == DocumentSplit::kBlankLine &&
         line->find_first_not_of(" \t") == std::string::npos) ||
        (options_.documents == DocumentSplit::kSeparator && *line == options_.separator);
    if (ends_document) {
      if (finish()) return document;
      continue;
    }
    if (document.text.empty()) {
      document.line = line_;
    } else {
      document.text += '\n';
    }
    document.text += *line;
    if (!bad && document.text.size() > cap) {
      bad_record(document.line,
                 "a document longer than data.max_document_bytes = " + std::to_string(cap));
      bad = true;
    }
    if (bad) document.text.clear();  // dropped at its end; nothing more is held
    if (options_.documents == DocumentSplit::kLine && finish()) return document;
  }
  if (finish()) return document;
  return std::nullopt;
}

}  // namespace exfusion
