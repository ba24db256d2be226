// The ImageNet-style tree of image files that torchvision's ImageFolder and timm read:
// `<split>/<class>/<image>`, classes sorted by name (their index is the label), images sorted
// by path within a class. Only the listing lives here; decoding happens in the loader's workers.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace exfusion {

struct ImageFolderListing {
  std::vector<std::string> classes;          // sorted; label i is classes[i]
  std::vector<std::filesystem::path> files;  // every image, class by class
  std::vector<int64_t> labels;               // one per file
};

// Lists `root` (a split such as train/ or val/). Files are images by extension (.jpg, .jpeg,
// .png, any case, as torchvision's IMG_EXTENSIONS minus the formats we cannot decode); other
// files are ignored, as ImageFolder does. Errors name the directory: missing, no class folders,
// a class folder without images. `classes`, when given, fixes the class list (a validation
// split uses the training split's): a folder not in it is an error naming it.
ImageFolderListing list_image_folder(const std::filesystem::path& root,
                                     const std::vector<std::string>* classes = nullptr);

}  // namespace exfusion
