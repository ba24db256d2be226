// Where a model puts an FFN and what dense FFN stands there: its path, the index `ffn.layers`
// addresses, its widths, the rows it sees per sample, and its form (plain or gated, which
// activation, biases or none, the linear layers' names). Every FFN kind builds over a site, so
// a ViT's fc1/fc2 GELU FFN, T5's gated wi_0/wi_1/wo and Llama's SwiGLU are the same seam.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "exfusion/config/fields.h"

namespace exfusion {

enum class Activation { kGelu, kGeluTanh, kSilu, kRelu };
// gelu (exact, erf: timm's ViT), gelu_tanh (T5 v1.1's gelu_new), silu (Llama), relu.
const config::Choices<Activation>& activation_names();
torch::Tensor activate(Activation activation, const torch::Tensor& x);

// The dense FFN's function: plain  y = down(act(up x)),  or gated  y = down(act(gate x) ⊙ up x).
// The names are the linear layers' names in the checkpoint; every kind registers its layers (or
// its expert sets) under them, so a dense form and an upcycling find each other by name.
struct FfnForm {
  bool gated = false;
  Activation activation = Activation::kGelu;
  bool bias = true;
  std::string up_name = "fc1";
  std::string gate_name;  // gated only
  std::string down_name = "fc2";
  // The model's initialisation of these layers, which a kind's fresh experts draw from too: the
  // std of the layers into the hidden units (gate, up) and of the one out of them (down), from a
  // normal truncated at ±2σ (timm's) or not (Hugging Face's T5 and Llama). Biases start at 0.
  double up_std = 0.02;
  double down_std = 0.02;
  bool truncated = true;
  // PVT v2's FFN: a depthwise k × k convolution over the token grid between the layer into the
  // hidden units and the activation (0: none). It is one dense layer (`dwconv`) that every
  // expert shares: it mixes neighbouring tokens, which routed experts never see together, so the
  // kinds that fuse (dense, exfusion, ders-exfusion) take it, as EWA does (its experts' hidden
  // units meet on the whole grid before it), and the routed ones refuse it.
  int64_t depthwise_kernel = 0;

  // fc1/fc2 with biases: timm's Mlp.
  static FfnForm plain(Activation activation = Activation::kGelu, bool bias = true);
  // fc1_g (gate), fc1_x (up), fc2: timm's SwiGLU names; a model renames them as its format needs.
  static FfnForm gated_form(Activation activation, bool bias);
  // The linear layers into the hidden units (gate first where there is one), then out of them.
  std::vector<std::string> layer_names() const;
  int64_t matrices() const { return gated ? 3 : 2; }
  // up_std or down_std, as `layer` (one of layer_names()) goes into the hidden units or out.
  double init_std(const std::string& layer) const;
};

struct FfnSite {
  std::string path;   // the FFN module's path in the model: "blocks.3.mlp"
  int64_t index = 0;  // what `ffn.layers` lists to choose this site
  int64_t dim = 0;
  int64_t hidden = 0;
  double tokens_per_sample = 0;  // rows the FFN sees per sample
  FfnForm form;

  // The dense FFN's parameters and multiply-adds per token.
  double dense_parameters() const;
  double dense_macs_per_token() const;
};

}  // namespace exfusion
