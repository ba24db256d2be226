// AdamW through PyTorch's fused multi-tensor kernel (at::_fused_adamw_: one call per
// parameter group instead of LibTorch's per-parameter loop of small ops), the weight-decay
// grouping timm/DeiT use, and global gradient-norm clipping. nanoT5's AdamWScale (each
// parameter's step scaled by max(1e-3, RMS(parameter))) is the other update rule it applies.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "exfusion/config/fields.h"
#include "exfusion/fusion/expert_kernels.h"
#include "exfusion/fusion/expert_mix.h"

namespace exfusion {

struct ParamGroup {
  std::string name;
  std::vector<std::string> param_names;  // parallel to `params`; keys of the optimizer state
  std::vector<torch::Tensor> params;
  double weight_decay = 0.0;
};

// Two groups, always in this order: "decay" (`weight_decay`) and "no_decay" (0), each in the
// order of `named_params`. No decay on the names in `exempt`: what the model's modules declare
// (parameters_exempt_from_weight_decay, layers/capabilities.h: norms, biases, the class token
// and position embedding, fusion weights). Parameters with requires_grad=false are left out.
std::vector<ParamGroup> split_weight_decay(
    const std::vector<std::pair<std::string, torch::Tensor>>& named_params, double weight_decay,
    const std::set<std::string>& exempt);

// adamw: PyTorch's AdamW. adamw_scale: nanoT5's AdamWScale, Hugging Face's AdamW (ε added to
// √v, the bias corrections folded into the step size, decay p ← p − lr·wd·p after the update)
// with the step size times max(1e-3, RMS(p)) of each parameter p; nanoT5 runs it with ε = 1e-6.
enum class UpdateRule { kAdamW, kAdamWScale };
const config::Choices<UpdateRule>& update_rule_names();

class FusedAdamW {
 public:
  FusedAdamW(std::vector<ParamGroup> groups, AdamWOptions options,
             UpdateRule rule = UpdateRule::kAdamW);
  UpdateRule rule() const { return rule_; }

  // On CUDA the kernels read the learning rate from a device scalar that set_lr fills (one
  // small kernel, no host synchronisation), so a captured CUDA graph follows the schedule.
  void set_lr(double lr);
  double lr() const { return options_.lr; }
  // Updates every parameter whose gradient is defined, with one _fused_adamw_ call per
  // (group, device, dtype). Parameters without a gradient keep their value and moments.
  void step();
  void zero_grad();  // drops the gradients (set_to_none), so the next backward allocates them

  // Steps the expert-bank parameter `param_name` from `sink` (filled by ExpertMix) with the
  // factored AdamW kernel, so its N expert gradients are never materialised. A gradient that
  // also reached the parameter the ordinary way is added to the materialised factored one.
  // Throws std::invalid_argument for an unknown name.
  void set_factored_gradient(const std::string& param_name, std::shared_ptr<FactoredGradient> sink);

  // Global L2 norm clipping over every gradient this optimizer will apply, factored ones
  // included (||m ⊗ G|| = ||m|| ||G||), with the coefficient kept on the device. Returns the
  // norm before clipping (float32 scalar; zero when there is no gradient).
  torch::Tensor clip_grad_norm_async(double max_norm);
  // Calls of step() on the host (a replayed CUDA graph makes none; the trainer counts those).
  int64_t steps_taken() const { return steps_taken_; }

  // "<param name>.exp_avg", ".exp_avg_sq" and ".step" (a float32 scalar) for every
  // parameter; zeros for one not stepped yet. The tensors are the live state, not copies.
  std::vector<std::pair<std::string, torch::Tensor>> state() const;
  // Restores what state() returned (keys it does not know are ignored); steps_taken()
  // becomes the largest restored step. Throws InputError naming a missing key or a shape
  // mismatch, in which case nothing has been changed.
  void load_state(const std::map<std::string, torch::Tensor>& state);

 private:
  struct Slot {
    std::string name;
    torch::Tensor param, exp_avg, exp_avg_sq, step;
    std::shared_ptr<FactoredGradient> factored;  // null: ordinary gradient only
  };
  struct Group {
    double weight_decay;
    std::vector<Slot> slots;
  };
  // The tensor lists of one kernel call, kept between steps; only `grads` is refilled.
  struct Bucket {
    double weight_decay;
    std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
  };

  static void ensure_state(Slot& slot);
  // The device learning rate when it sits on `param`'s device; undefined otherwise.
  torch::Tensor lr_beside(const torch::Tensor& param) const;
  void rebuild_buckets();
  // Gradient accumulation can reach a bank twice: its first backward pass left a factored
  // gradient, later ones an ordinary one. Adds the factored part to the ordinary gradient,
  // which the multi-tensor step then applies.
  void fold_factored_into_ordinary();
  void step_factored();
  // AdamWScale, one parameter at a time in plain tensor ops (it has no fused kernel).
  void step_rms_scaled();

  std::vector<Group> groups_;
  AdamWOptions options_;
  UpdateRule rule_;
  torch::Tensor lr_on_device_;  // float32 scalar beside CUDA parameters; undefined on the CPU
  int64_t steps_taken_ = 0;
  std::vector<Bucket> buckets_;
  std::vector<char> has_grad_;  // per slot, all groups in order: what buckets_ was built for
  bool buckets_valid_ = false;
};

// Scales all gradients of `params` so their global L2 norm is at most `max_norm`, as
// torch.nn.utils.clip_grad_norm_ does, and returns the norm before clipping. Reads the norm
// back to the host.
double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);

// The same, but the clip coefficient stays on the device, so nothing waits for the GPU;
// returns the norm before clipping as a float32 scalar tensor (zero if no gradient).
torch::Tensor clip_grad_norm_async(const std::vector<torch::Tensor>& params, double max_norm);

}  // namespace exfusion
