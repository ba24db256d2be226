// Trained model -> dense model (see fuse.h).
#include "exfusion/fusion/fuse.h"

#include <string>

namespace exfusion {

VisionTransformer fuse(const VisionTransformer& trained) {
  auto options = trained->options;
  options.ffn = FfnOptions{};
  VisionTransformer dense(options);
  const auto reference = trained->parameters().front();
  dense->to(reference.device(), reference.scalar_type());
  for (int64_t i = 0; i < options.depth; ++i) {
    dense->block(i)->replace_mlp(trained->block(i)->mlp->to_dense());
  }
  torch::NoGradGuard no_grad;
  const auto source = trained->named_parameters();
  for (auto& item : dense->named_parameters()) {
    if (item.key().find(".mlp.") != std::string::npos) continue;  // set by to_dense above
    const auto& value = source[item.key()];
    TORCH_CHECK(value.sizes() == item.value().sizes(), "fuse: ", item.key(), " has shape ",
                value.sizes(), ", the dense model expects ", item.value().sizes());
    item.value().copy_(value);
  }
  dense->train(trained->is_training());
  return dense;
}

}  // namespace exfusion
