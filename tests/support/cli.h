// Runs the built `exfusion` binary from a test and captures its exit code and output, and
// writes small IDX datasets, so CLI behaviour is tested as a user meets it.
#pragma once
#include <ftw.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace exfusion::testing {

struct CliResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

inline CliResult run_cli(const std::string& args) {
  const std::string command = std::string(EXFUSION_CLI_PATH) + " " + args + " 2>&1";
  CliResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), buffer.size(), pipe) != nullptr) result.output += buffer.data();
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// Removes a directory tree without std::filesystem::remove_all: torch 2.11's libtorch.so
// exports a copy of it that crashes if it wins symbol resolution (CMakeLists.txt links
// libstdc++ first against that; the tests do not depend on the link order).
inline void remove_tree(const std::filesystem::path& dir) {
  ::nftw(
      dir.c_str(),
      [](const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }, 16,
      FTW_DEPTH | FTW_PHYS);
}

inline std::filesystem::path fresh_temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("exfusion-test-" + name + "-" + std::to_string(::getpid()));
  remove_tree(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline void put_be32(std::vector<unsigned char>& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back((value >> shift) & 0xff);
}

// A raw (uncompressed) uint8 IDX file with the given dims and payload.
inline void write_idx_u8(const std::filesystem::path& path, const std::vector<uint32_t>& dims,
                         const std::vector<unsigned char>& payload) {
  std::vector<unsigned char> bytes{0, 0, 0x08, static_cast<unsigned char>(dims.size())};
  for (auto d : dims) put_be32(bytes, d);
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

// A learnable toy dataset in Fashion-MNIST's file layout: class k is a bright bar at row
// 2k+3 plus noise. `side` × `side` single-channel images.
inline void write_toy_idx_dataset(const std::filesystem::path& dir, uint32_t train, uint32_t test,
                                  uint32_t side = 28) {
  std::mt19937 rng(7);
  auto make = [&](const std::string& prefix, uint32_t count) {
    std::vector<unsigned char> images(static_cast<size_t>(count) * side * side), labels(count);
    for (uint32_t i = 0; i < count; ++i) {
      const auto label = static_cast<unsigned char>(rng() % 10);
      labels[i] = label;
      for (uint32_t p = 0; p < side * side; ++p) images[i * side * side + p] = rng() % 60;
      const uint32_t row = (2 * label + 3) % side;
      for (uint32_t x = 0; x < side; ++x) images[i * side * side + row * side + x] = 255;
    }
    write_idx_u8(dir / (prefix + "-images-idx3-ubyte"), {count, side, side}, images);
    write_idx_u8(dir / (prefix + "-labels-idx1-ubyte"), {count}, labels);
  };
  make("train", train);
  make("t10k", test);
}

// A file's bytes, text or binary.
inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Temporary files left behind by an interrupted or refused write.
inline std::vector<std::string> temp_files_in(const std::filesystem::path& dir) {
  std::vector<std::string> found;
  if (!std::filesystem::exists(dir)) return found;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (entry.path().filename().string().find(".tmp.") != std::string::npos) {
      found.push_back(entry.path().string());
    }
  }
  return found;
}

// The settings of a CLI run that only needs to train a few steps of a tiny ViT (`--set` last,
// so that a test appends its own keys).
inline const std::string kTinyRunArgs =
    " --threads 1 --set model.embed_dim=16 model.depth=2 model.num_heads=2 train.batch_size=16 "
    "train.epochs=1 train.max_steps=3";

// The JSON a command prints last on stdout (progress lines go to stderr before it).
inline nlohmann::json printed_json(const std::string& output) {
  return nlohmann::json::parse(output.substr(output.find('{')));
}

}  // namespace exfusion::testing
