// FFN sites and forms (see ffn_site.h).
#include "exfusion/layers/ffn_site.h"

#include <ATen/ATen.h>

namespace exfusion {

const config::Choices<Activation>& activation_names() {
  static const config::Choices<Activation> names{{{"gelu", Activation::kGelu},
                                                  {"gelu_tanh", Activation::kGeluTanh},
                                                  {"silu", Activation::kSilu},
                                                  {"relu", Activation::kRelu}}};
  return names;
}

torch::Tensor activate(Activation activation, const torch::Tensor& x) {
  switch (activation) {
    case Activation::kGelu:
      return at::gelu(x);
    case Activation::kGeluTanh:
      return at::gelu(x, "tanh");
    case Activation::kSilu:
      return at::silu(x);
    case Activation::kRelu:
      return at::relu(x);
  }
  return at::gelu(x);
}

FfnForm FfnForm::plain(Activation activation, bool bias) {
  FfnForm form;
  form.activation = activation;
  form.bias = bias;
  return form;
}

FfnForm FfnForm::gated_form(Activation activation, bool bias) {
  FfnForm form;
  form.gated = true;
  form.activation = activation;
  form.bias = bias;
  form.gate_name = "fc1_g";
  form.up_name = "fc1_x";
  form.down_name = "fc2";
  return form;
}

std::vector<std::string> FfnForm::layer_names() const {
  if (gated) return {gate_name, up_name, down_name};
  return {up_name, down_name};
}

double FfnForm::init_std(const std::string& layer) const {
  return layer == down_name ? down_std : up_std;
}

double FfnSite::dense_parameters() const {
  const double d = static_cast<double>(dim), h = static_cast<double>(hidden);
  const double into_hidden = d * h + (form.bias ? h : 0.0);
  const double out_of_hidden = h * d + (form.bias ? d : 0.0);
  const double grid_conv =
      form.depthwise_kernel > 0
          ? h * static_cast<double>(form.depthwise_kernel * form.depthwise_kernel) + h
          : 0.0;
  return (form.gated ? 2.0 : 1.0) * into_hidden + out_of_hidden + grid_conv;
}

double FfnSite::dense_macs_per_token() const {
  return static_cast<double>(form.matrices()) * static_cast<double>(dim) *
             static_cast<double>(hidden) +
         static_cast<double>(hidden * form.depthwise_kernel * form.depthwise_kernel);
}

}  // namespace exfusion
