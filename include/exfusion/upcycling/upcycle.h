// Upcycling (SPEC §2): a trained dense model's FFNs become the experts of a multi-expert model
// (top-k MoE or ExFusion), as exact copies (sparse upcycling), with a random ⌊r·H⌋ of the
// hidden units re-initialised per expert (Drop-Upcycling) or with noise on them instead.
#pragma once
#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "exfusion/config/fields.h"

namespace exfusion {

enum class UpcycleMethod { kCopy, kDrop, kNoise };
const config::Choices<UpcycleMethod>& upcycle_method_names();

// The run config's `init` section: where a run's weights start and, from a dense checkpoint,
// how its experts are made. `from` empty: a fresh initialisation.
struct InitConfig {
  std::string from;
  UpcycleMethod method = UpcycleMethod::kCopy;
  double ratio = 0.5;
  bool independent_indices = false;
  double noise_std = 0.02;
  int64_t seed = 0;

  template <class Fields>
  void fields(Fields& f) {
    f("from", from,
      "a dense checkpoint (model.safetensors, a dense run) to upcycle, or an upcycled "
      "init.safetensors (exfusion upcycle) to start from; \"\" = fresh weights");
    f("method", method,
      "how experts come from the dense FFN: copy (sparse upcycling), drop (Drop-Upcycling) "
      "or noise (noise upcycling)",
      upcycle_method_names());
    f("ratio", ratio, "share r of hidden units re-initialised (drop) or noised per expert",
      config::in_range<double>(0.0, 1.0));
    f("independent_indices", independent_indices,
      "drop/noise: one random subset per matrix (the official code) instead of the same "
      "units in W_u and W_d (the paper)");
    f("noise_std", noise_std, "std of the noise of method noise", config::non_negative<double>());
    f("seed", seed, "seed of the subsets and the re-initialisation");
  }
};

// The registered FFN kinds whose FFNs have expert sets (layers/capabilities.h): what a dense
// model can be upcycled into (`exfusion upcycle --to`, init.from).
std::vector<std::string> ffn_kinds_with_experts();

// Dense tensors by name (a dense model's module_tensors).
using DenseTensors = std::map<std::string, torch::Tensor>;

struct UpcycleReport {
  int64_t layers = 0;   // FFNs whose experts came from the dense FFN
  int64_t experts = 0;  // experts per such FFN
  // The dense FFN weights each upcycled layer came from, by their dense names
  // ("blocks.0.mlp.fc1.weight"): the base DeRS compresses against.
  DenseTensors dense_base;
};

// Sets `model`'s weights from `dense`: every FFN with expert sets (HasExpertSets: fc1/fc2, or a
// gated FFN's three) gets each set's experts from the dense layer of the same name at the same
// path (the rows of the layers into the hidden units and the columns of the one out of them are
// its hidden units) by `init.method`; its router starts from normal(0, 0.02), other tensors of
// such an FFN (fusion weights, memory banks) keep their initialisation; every other tensor is
// copied from `dense`. Throws InputError naming the tensor (and both shapes) when `dense` lacks one
// or does not match.
UpcycleReport upcycle_into(torch::nn::Module& model, const DenseTensors& dense,
                           const InitConfig& init, const std::string& source);

}  // namespace exfusion
