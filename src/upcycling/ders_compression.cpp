// DeRS compression of expert banks and its decode (see ders_compression.h): Δ_i against a base,
// kept as sparse indices + values or as k-bit codes packed into bytes with a scale per output
// row; synthesise_ders_tensors is the one place a compressed file becomes model tensors again.
#include "exfusion/upcycling/ders_compression.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <set>
#include <sstream>
#include <vector>

#include "exfusion/fusion/expert_bank.h"
#include "exfusion/io/module_tensors.h"
#include "exfusion/layers/capabilities.h"
#include "exfusion/util/error.h"
#include "exfusion/util/json_input.h"
#include "exfusion/util/shape_text.h"

namespace exfusion {
namespace {

bool sparse(DersMethod method) { return method != DersMethod::kQuant; }

int64_t max_code(int64_t bits) { return (int64_t{1} << (bits - 1)) - 1; }

// 2^(k·j) for the j-th code of a byte: packing multiplies by it, unpacking shifts by k·j.
torch::Tensor code_shifts(int64_t bits) {
  return torch::arange(8 / bits, torch::kInt) * static_cast<int>(bits);
}

// codes [N, out, in] (each < 2^k) into [N, out, ⌈in·k/8⌉] bytes, the first code lowest.
torch::Tensor pack_codes(const torch::Tensor& codes, int64_t bits) {
  const int64_t per_byte = 8 / bits, in = codes.size(2);
  const int64_t bytes = (in + per_byte - 1) / per_byte;
  auto padded = torch::constant_pad_nd(codes.to(torch::kInt), {0, bytes * per_byte - in});
  padded = padded.view({codes.size(0), codes.size(1), bytes, per_byte});
  return torch::bitwise_left_shift(padded, code_shifts(bits)).sum(3).to(torch::kUInt8);
}

torch::Tensor unpack_codes(const torch::Tensor& packed, int64_t bits, int64_t in) {
  const int64_t per_byte = 8 / bits;
  const auto shifted =
      torch::bitwise_right_shift(packed.to(torch::kInt).unsqueeze(3), code_shifts(bits));
  const auto codes = torch::bitwise_and(shifted, static_cast<int>((1 << bits) - 1));
  return codes.reshape({packed.size(0), packed.size(1), packed.size(2) * per_byte}).slice(2, 0, in);
}

void require(bool ok, const std::string& where, const std::string& problem) {
  if (!ok) throw InputError(where + ": " + problem);
}

}  // namespace

DersMethod parse_ders_method(const std::string& name) {
  if (name == "drop") return DersMethod::kDrop;
  if (name == "topk") return DersMethod::kTopk;
  if (name == "quant") return DersMethod::kQuant;
  throw InputError("DeRS compression method '" + name + "': one of drop, topk, quant");
}

std::string to_string(DersMethod method) {
  switch (method) {
    case DersMethod::kDrop:
      return "drop";
    case DersMethod::kTopk:
      return "topk";
    case DersMethod::kQuant:
      return "quant";
  }
  return "?";
}

void DersOptions::validate() const {
  if (!(ratio >= 0.0 && ratio < 1.0)) {
    std::ostringstream text;
    text << "--ratio " << ratio << ": the share of each expert's delta entries dropped must be in "
         << "[0, 1)";
    throw InputError(text.str());
  }
  if (bits != 8 && bits != 4 && bits != 2 && bits != 1) {
    throw InputError("--bits " + std::to_string(bits) +
                     ": quantisation takes 8, 4, 2 or 1 bits per delta entry");
  }
}

nlohmann::json DersOptions::to_json() const {
  nlohmann::json json = {{"method", to_string(method)}};
  if (sparse(method)) json["ratio"] = ratio;
  if (method == DersMethod::kDrop) json["seed"] = seed;
  if (method == DersMethod::kQuant) json["bits"] = bits;
  return json;
}

DersOptions DersOptions::from_json(const nlohmann::json& json, const std::string& where) {
  require(json.is_object() && json.contains("method") && json["method"].is_string(), where,
          "no DeRS method");
  DersOptions options;
  options.method = parse_ders_method(json["method"].get<std::string>());
  if (json.contains("ratio")) {
    require(json["ratio"].is_number(), where, "ratio is not a number");
    options.ratio = json["ratio"].get<double>();
  }
  if (json.contains("bits")) {
    require(json["bits"].is_number_integer(), where, "bits is not an integer");
    options.bits = json["bits"].get<int64_t>();
  }
  if (json.contains("seed")) {
    require(json["seed"].is_number_integer(), where, "seed is not an integer");
    options.seed = json["seed"].get<int64_t>();
  }
  try {
    options.validate();
  } catch (const InputError& e) {
    throw InputError(where + ": " + e.what());
  }
  return options;
}

CompressedDeltas compress_deltas(const torch::Tensor& deltas, const DersOptions& options,
                                 at::Generator& generator) {
  options.validate();
  const auto d = deltas.detach().to(torch::kCPU, torch::kFloat).contiguous();
  const int64_t experts = d.size(0), out = d.size(1), in = d.size(2), entries = out * in;
  CompressedDeltas compressed;
  if (sparse(options.method)) {
    const int64_t kept =
        entries - static_cast<int64_t>(std::floor(options.ratio * static_cast<double>(entries)));
    const auto flat = d.reshape({experts, entries});
    torch::Tensor index;
    if (options.method == DersMethod::kDrop) {
      std::vector<torch::Tensor> rows;
      for (int64_t e = 0; e < experts; ++e) {
        rows.push_back(at::randperm(entries, generator, torch::kLong).slice(0, 0, kept));
      }
      index = torch::stack(rows);
    } else {
      index = std::get<1>(flat.abs().topk(kept, 1, /*largest=*/true, /*sorted=*/false));
    }
    index = std::get<0>(index.sort(1));
    compressed.values = flat.gather(1, index);
    if (options.method == DersMethod::kDrop) {
      compressed.values = compressed.values / static_cast<float>(1.0 - options.ratio);
    }
    const bool fits_int32 = entries - 1 <= std::numeric_limits<int32_t>::max();
    compressed.indices = index.to(fits_int32 ? torch::kInt : torch::kLong);
    return compressed;
  }
  torch::Tensor codes;
  if (options.bits == 1) {
    compressed.scales = d.abs().mean(2);
    codes = (d >= 0).to(torch::kUInt8);
  } else {
    const auto top = static_cast<double>(max_code(options.bits));
    compressed.scales = d.abs().amax(2) / static_cast<float>(top);
    const auto divisor =
        torch::where(compressed.scales > 0, compressed.scales, torch::ones_like(compressed.scales));
    const auto q = torch::round(d / divisor.unsqueeze(2)).clamp(-top, top);
    codes = (q + top).to(torch::kUInt8);
  }
  compressed.codes = pack_codes(codes, options.bits);
  return compressed;
}

torch::Tensor decompress_deltas(const CompressedDeltas& compressed, const DersOptions& options,
                                int64_t experts, int64_t out, int64_t in,
                                const std::string& where) {
  const int64_t entries = out * in;
  if (sparse(options.method)) {
    const auto& index = compressed.indices;
    const auto& values = compressed.values;
    require(index.defined() && values.defined(), where, "sparse deltas need indices and values");
    require(index.dim() == 2 && index.size(0) == experts && values.sizes() == index.sizes(), where,
            "indices " + shape_text(index.sizes()) + " and values " + shape_text(values.sizes()) +
                " are not both [" + std::to_string(experts) + ", K]");
    require(index.scalar_type() == torch::kInt || index.scalar_type() == torch::kLong, where,
            "indices are not int32 or int64");
    require(values.scalar_type() == torch::kFloat, where, "values are not float32");
    const auto index64 = index.to(torch::kLong);
    if (index64.numel() > 0) {
      require(index64.min().item<int64_t>() >= 0 && index64.max().item<int64_t>() < entries, where,
              "an index lies outside the expert's " + std::to_string(entries) + " entries");
    }
    return torch::zeros({experts, entries}, torch::kFloat)
        .scatter_(1, index64, values)
        .view({experts, out, in});
  }
  const auto& codes = compressed.codes;
  const auto& scales = compressed.scales;
  require(codes.defined() && scales.defined(), where, "quantised deltas need codes and scales");
  const int64_t per_byte = 8 / options.bits;
  const std::vector<int64_t> code_shape{experts, out, (in + per_byte - 1) / per_byte};
  require(codes.scalar_type() == torch::kUInt8 && codes.sizes() == at::IntArrayRef(code_shape),
          where,
          "codes " + shape_text(codes.sizes()) + " are not uint8 " + shape_text(code_shape) + " (" +
              std::to_string(options.bits) + "-bit codes)");
  require(scales.scalar_type() == torch::kFloat &&
              scales.sizes() == at::IntArrayRef(std::vector<int64_t>{experts, out}),
          where, "scales " + shape_text(scales.sizes()) + " are not float32 [N, out]");
  const auto unpacked = unpack_codes(codes, options.bits, in);
  const auto levels = options.bits == 1 ? unpacked * 2 - 1 : unpacked - max_code(options.bits);
  return levels.to(torch::kFloat) * scales.unsqueeze(2);
}

DersFile compress_model(const torch::nn::Module& model, const DenseTensors& dense_base,
                        const DersOptions& options) {
  options.validate();
  torch::NoGradGuard no_grad;
  auto generator = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(options.seed));
  DersFile file;
  NamedTensors compressed_tensors;
  std::set<std::string> bank_weights;
  auto banks = nlohmann::json::array();
  // Every expert set of full experts, in the model's order (a DeRS model is compressed already).
  std::vector<std::pair<std::string, const ExpertBankImpl*>> sets;
  for_each_capable<HasExpertSets>(model, [&](const std::string& path, const HasExpertSets& ffn) {
    const auto& module = dynamic_cast<const torch::nn::Module&>(ffn);
    const auto children = module.named_children();
    for (const auto& set : ffn.expert_sets().sets) {
      const auto* child = children.find(set.name);
      const auto* bank =
          child != nullptr ? dynamic_cast<const ExpertBankImpl*>(child->get()) : nullptr;
      if (bank != nullptr) sets.emplace_back((path.empty() ? "" : path + ".") + set.name, bank);
    }
  });
  for (const auto& [set_path, bank] : sets) {
    const auto name = set_path + ".weight";
    const auto weights = bank->weight.detach().to(torch::kCPU, torch::kFloat);
    const int64_t experts = weights.size(0), out = weights.size(1), in = weights.size(2);
    torch::Tensor base;
    const auto recorded = dense_base.find(name);
    if (recorded != dense_base.end()) {
      if (recorded->second.sizes() != weights[0].sizes()) {
        throw InputError("the recorded dense base '" + name + "' has shape " +
                         shape_text(recorded->second.sizes()) + ", the experts' is " +
                         shape_text(weights[0].sizes()));
      }
      base = recorded->second.detach().to(torch::kCPU, torch::kFloat).contiguous();
    } else {
      base = weights.mean(0);
    }
    const auto compressed = compress_deltas(weights - base, options, generator);
    compressed_tensors.emplace_back(kDersBasePrefix + name, base);
    const auto delta = kDersDeltaPrefix + name;
    int64_t stored_values = base.numel(), delta_bytes = 0;
    if (sparse(options.method)) {
      compressed_tensors.emplace_back(delta + ".indices", compressed.indices);
      compressed_tensors.emplace_back(delta + ".values", compressed.values);
      stored_values += compressed.values.numel();
      delta_bytes = compressed.indices.nbytes() + compressed.values.nbytes();
    } else {
      compressed_tensors.emplace_back(delta + ".codes", compressed.codes);
      compressed_tensors.emplace_back(delta + ".scales", compressed.scales);
      stored_values += weights.numel() + compressed.scales.numel();
      delta_bytes = compressed.codes.nbytes() + compressed.scales.nbytes();
    }
    bank_weights.insert(name);
    banks.push_back({{"weight", name},
                     {"experts", experts},
                     {"shape", {out, in}},
                     {"base", recorded != dense_base.end() ? "dense_base" : "expert_mean"},
                     {"params_before", weights.numel()},
                     {"params_after", stored_values},
                     {"bytes_before", static_cast<int64_t>(bank->weight.nbytes())},
                     {"bytes_after", static_cast<int64_t>(base.nbytes()) + delta_bytes}});
  }
  if (bank_weights.empty()) {
    throw InputError(
        "the model has no expert banks to compress (DeRS compresses the experts of "
        "a MoE or an unfused ExFusion model)");
  }
  for (const auto& [name, tensor] : module_tensors(model)) {
    if (bank_weights.count(name) == 0) file.tensors.emplace_back("model." + name, tensor);
  }
  file.tensors.insert(file.tensors.end(), compressed_tensors.begin(), compressed_tensors.end());
  file.report = {{"options", options.to_json()}, {"banks", banks}};
  return file;
}

std::map<std::string, torch::Tensor> synthesise_ders_tensors(const SafetensorsFile& file,
                                                             const std::filesystem::path& path) {
  const std::string where = path.string();
  const auto entry = file.metadata.find(kDersMetadataKey);
  require(entry != file.metadata.end(), where,
          std::string("no '") + kDersMetadataKey + "' metadata in a DeRS-compressed file");
  const auto options = DersOptions::from_json(
      parse_json_input(entry->second, where + " (metadata " + kDersMetadataKey + ")"),
      where + " (metadata " + kDersMetadataKey + ")");
  const std::string base_prefix = kDersBasePrefix, delta_prefix = kDersDeltaPrefix;
  const auto part = [&](const std::string& name, const char* suffix) {
    const auto found = file.tensors.find(delta_prefix + name + suffix);
    return found == file.tensors.end() ? torch::Tensor() : found->second;
  };
  std::map<std::string, torch::Tensor> tensors;
  std::set<std::string> bases;
  for (const auto& [name, tensor] : file.tensors) {
    if (name.rfind(delta_prefix, 0) == 0) continue;
    if (name.rfind(base_prefix, 0) != 0) {
      tensors.emplace(name, tensor);
      continue;
    }
    const auto weight = name.substr(base_prefix.size());
    const std::string at = where + ": '" + weight + "'";
    require(tensor.dim() == 2 && tensor.scalar_type() == torch::kFloat, at,
            "its base is not a float32 matrix");
    const CompressedDeltas compressed{part(weight, ".indices"), part(weight, ".values"),
                                      part(weight, ".codes"), part(weight, ".scales")};
    const auto& first = sparse(options.method) ? compressed.values : compressed.codes;
    require(first.defined() && first.dim() >= 1, at, "no compressed deltas beside its base");
    const auto deltas =
        decompress_deltas(compressed, options, first.size(0), tensor.size(0), tensor.size(1), at);
    require(file.tensors.count("model." + weight) == 0, at, "stored both whole and compressed");
    tensors.emplace("model." + weight, tensor.unsqueeze(0) + deltas);
    bases.insert(weight);
  }
  for (const auto& [name, tensor] : file.tensors) {
    if (name.rfind(delta_prefix, 0) != 0) continue;
    const auto weight = name.substr(delta_prefix.size(), name.rfind('.') - delta_prefix.size());
    require(bases.count(weight) != 0, where, "the deltas '" + name + "' have no base");
  }
  return tensors;
}

}  // namespace exfusion
