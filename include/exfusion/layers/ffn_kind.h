// What an FFN kind is to the rest of the tool: a name in the config, an options section whose
// fields are declared once, and a factory for one FFN. Each kind is one source file; one line in
// models/registry.cpp (or a test's own call to ffn_kinds().add) registers it. What a kind can do
// beyond its forward (a dense form, an extra loss, metrics) is in layers/capabilities.h.
#pragma once
#include <torch/nn/module.h>
#include <torch/types.h>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "exfusion/config/fields.h"
#include "exfusion/config/kind_registry.h"
#include "exfusion/layers/ffn_site.h"

namespace exfusion {

// Every FFN: y = f(x) over the last dimension, shape kept.
class FeedForwardImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
};

// One kind's options behind a uniform face; DeclaredFfnOptions<Options> implements it for any
// options struct that declares its fields (config/fields.h) and has
//   std::shared_ptr<FeedForwardImpl> build(const FfnSite& site) const;  // the site's form
//   std::string run_name() const;                                        // "exfusion-mb-n4"
// and optionally validate(const config::Location&) const, and
//   double forward_macs_per_token(const FfnSite& site) const;  (default: the dense FFN's)
//   double extra_step_bytes(const FfnSite& site, double tokens, int64_t gemm_bytes) const;
class FfnOptions {
 public:
  virtual ~FfnOptions() = default;
  virtual std::shared_ptr<FfnOptions> clone() const = 0;
  // Applies the keys of `patch` not in `handled` (the ffn section's own keys).
  virtual void apply(const nlohmann::json& patch, const config::Location& at,
                     const std::set<std::string>& handled) = 0;
  virtual nlohmann::json to_json() const = 0;
  virtual std::vector<config::FieldHelp> describe(const std::string& prefix) const = 0;
  virtual std::vector<std::string> keys() const = 0;
  virtual void validate(const config::Location& at) const = 0;
  virtual std::shared_ptr<FeedForwardImpl> build(const FfnSite& site) const = 0;
  virtual std::string run_name() const = 0;
  virtual double forward_macs_per_token(const FfnSite& site) const {
    return site.dense_macs_per_token();
  }
  // Memory traffic a training step needs beyond the dense FFN's, at its floor (bench).
  virtual double extra_step_bytes(const FfnSite& /*site*/, double /*tokens*/,
                                  int64_t /*gemm_bytes*/) const {
    return 0.0;
  }
};

namespace detail {
template <class T, class = void>
struct has_validate : std::false_type {};
template <class T>
struct has_validate<T, std::void_t<decltype(std::declval<const T&>().validate(
                           std::declval<const config::Location&>()))>> : std::true_type {};
template <class T, class = void>
struct has_macs : std::false_type {};
template <class T>
struct has_macs<T, std::void_t<decltype(std::declval<const T&>().forward_macs_per_token(
                       std::declval<const FfnSite&>()))>> : std::true_type {};
template <class T, class = void>
struct has_extra_bytes : std::false_type {};
template <class T>
struct has_extra_bytes<T, std::void_t<decltype(std::declval<const T&>().extra_step_bytes(
                              std::declval<const FfnSite&>(), 0.0, 0))>> : std::true_type {};
}  // namespace detail

template <class Options>
class DeclaredFfnOptions final : public FfnOptions {
 public:
  explicit DeclaredFfnOptions(Options options = {}) : options(std::move(options)) {}
  std::shared_ptr<FfnOptions> clone() const override {
    return std::make_shared<DeclaredFfnOptions>(options);
  }
  void apply(const nlohmann::json& patch, const config::Location& at,
             const std::set<std::string>& handled) override {
    config::apply(options, patch, at, handled);
  }
  nlohmann::json to_json() const override { return config::to_json(options); }
  std::vector<config::FieldHelp> describe(const std::string& prefix) const override {
    return config::describe(options, prefix);
  }
  std::vector<std::string> keys() const override { return config::keys_of<Options>(); }
  void validate(const config::Location& at) const override {
    if constexpr (detail::has_validate<Options>::value) options.validate(at);
  }
  std::shared_ptr<FeedForwardImpl> build(const FfnSite& site) const override {
    return options.build(site);
  }
  std::string run_name() const override { return options.run_name(); }
  double forward_macs_per_token(const FfnSite& site) const override {
    if constexpr (detail::has_macs<Options>::value) {
      return options.forward_macs_per_token(site);
    } else {
      return FfnOptions::forward_macs_per_token(site);
    }
  }
  double extra_step_bytes(const FfnSite& site, double tokens, int64_t gemm_bytes) const override {
    if constexpr (detail::has_extra_bytes<Options>::value) {
      return options.extra_step_bytes(site, tokens, gemm_bytes);
    } else {
      return 0.0;
    }
  }

  Options options;
};

// The FFN kinds a config may name.
class FfnRegistry : public config::KindRegistry<FfnOptions> {
 public:
  // Registers `Options` under `name`; a second kind of the same name replaces the first.
  template <class Options>
  void add(const std::string& name, const std::string& help, Options defaults = {}) {
    add_entry({name, help, std::make_shared<DeclaredFfnOptions<Options>>(std::move(defaults))});
  }
};

}  // namespace exfusion
