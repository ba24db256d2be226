// CIFAR-10 and CIFAR-100 in their binary form (the "binary version" archives): records of
// label byte(s) and 3072 planar RGB bytes. CIFAR-10 is data_batch_1..5.bin + test_batch.bin,
// CIFAR-100 is train.bin + test.bin with a coarse and a fine label per image.
#pragma once
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "exfusion/data/idx.h"

namespace exfusion {

enum class CifarVariant { Cifar10, Cifar100 };

struct CifarFiles {
  CifarVariant variant = CifarVariant::Cifar10;
  std::vector<std::filesystem::path> train;  // in reading order
  std::filesystem::path test;
  std::vector<std::string> class_names;  // from batches.meta.txt / *_label_names.txt, if there
};

// The files of the CIFAR copy in `dir`; `coarse` picks CIFAR-100's 20 superclass names.
// Errors name the directory and what was looked for, or a file that is missing.
CifarFiles cifar_files_in(const std::filesystem::path& dir, bool coarse);

// The labels and planar pixels of one file's bytes; `where` names it in errors (size not a
// whole number of records, a label outside the variant's classes).
struct CifarRecords {
  std::vector<int64_t> labels;
  std::vector<uint8_t> pixels;  // [N, 3, 32, 32]
};
CifarRecords decode_cifar(std::string_view bytes, CifarVariant variant, bool coarse,
                          const std::string& where);

// Every file of one split, concatenated: uint8 [N, 3, 32, 32] images, int64 [N] labels.
ImageDataset load_cifar(const std::vector<std::filesystem::path>& files, CifarVariant variant,
                        bool coarse);

}  // namespace exfusion
