// The data section's cross-field checks (see data_config.h).
#include "exfusion/data/data_config.h"

namespace exfusion {

void DataConfig::validate(const config::Location& at) const {
  for (const auto s : std) {
    if (!(s > 0)) config::fail(at, "std", std, "positive values");
  }
  const int explicit_files =
      !train_images.empty() + !train_labels.empty() + !test_images.empty() + !test_labels.empty();
  if (explicit_files != 0 && explicit_files != 4) {
    config::fail(at, "train_images", train_images,
                 "all four of train_images, train_labels, test_images, test_labels");
  }
}

}  // namespace exfusion
