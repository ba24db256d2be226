// Image folder listing (see image_folder.h): sorted with std::string's byte order, which is
// Python's sorted() on the same names, so labels match torchvision's class_to_idx.
#include "exfusion/data/image_folder.h"

#include <algorithm>
#include <cctype>
#include <map>

#include "exfusion/util/error.h"

namespace exfusion {
namespace fs = std::filesystem;
namespace {

bool is_image_file(const fs::path& path) {
  auto extension = path.extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return extension == ".jpg" || extension == ".jpeg" || extension == ".png";
}

}  // namespace

ImageFolderListing list_image_folder(const fs::path& root,
                                     const std::vector<std::string>* classes) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    throw InputError(root.string() + ": no such directory, expected <class>/<image> folders");
  }
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    if (entry.is_directory(ec)) found.push_back(entry.path().filename().string());
  }
  if (ec) throw InputError(root.string() + ": cannot list the directory (" + ec.message() + ")");
  std::sort(found.begin(), found.end());
  if (found.empty()) {
    throw InputError(root.string() + ": no class folders, expected <class>/<image> folders");
  }
  ImageFolderListing listing;
  listing.classes = classes ? *classes : found;
  std::map<std::string, int64_t> index;
  for (size_t i = 0; i < listing.classes.size(); ++i) {
    index[listing.classes[i]] = static_cast<int64_t>(i);
  }
  for (const auto& name : found) {
    const auto label = index.find(name);
    if (label == index.end()) {
      throw InputError((root / name).string() +
                       ": a class the training split does not have (it has " +
                       std::to_string(listing.classes.size()) + " classes)");
    }
    std::vector<fs::path> images;
    for (const auto& entry : fs::recursive_directory_iterator(root / name, ec)) {
      if (entry.is_regular_file(ec) && is_image_file(entry.path())) images.push_back(entry.path());
    }
    if (ec) {
      throw InputError((root / name).string() + ": cannot list the directory (" + ec.message() +
                       ")");
    }
    if (images.empty()) {
      throw InputError((root / name).string() + ": a class folder without .jpg/.jpeg/.png images");
    }
    std::sort(images.begin(), images.end());
    for (auto& image : images) {
      listing.files.push_back(std::move(image));
      listing.labels.push_back(label->second);
    }
  }
  return listing;
}

}  // namespace exfusion
