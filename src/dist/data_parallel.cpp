// Data parallelism over c10d (see data_parallel.h). The Reducer is set up as
// torch.nn.parallel.DistributedDataParallel sets it up: buckets from
// compute_bucket_assignment_by_size over the parameters in reverse order of definition, a small
// first bucket, averaging by the world size, buckets rebuilt once in gradient order.
#include "exfusion/dist/data_parallel.h"

#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <algorithm>
#include <chrono>
#include <unordered_map>
#include <utility>

namespace exfusion {
namespace {

constexpr int64_t kFirstBucketBytes = 1 << 20;  // torch.distributed._DEFAULT_FIRST_BUCKET_BYTES

class GroupMean : public CrossRankMean {
 public:
  explicit GroupMean(std::shared_ptr<DistributedGroup> group) : group_(std::move(group)) {}
  void mean_(torch::Tensor& tensor) override {
    group_->all_reduce_sum_(tensor);
    tensor.div_(group_->size());
  }
  int64_t rank() const override { return group_->rank(); }
  int64_t ranks() const override { return group_->size(); }

 private:
  std::shared_ptr<DistributedGroup> group_;
};

}  // namespace

DataParallel::DataParallel(std::shared_ptr<DistributedGroup> group, torch::nn::Module& model,
                           const std::map<std::string, std::shared_ptr<FactoredGradient>>& factored,
                           DataParallelOptions options)
    : group_(std::move(group)), batch_mean_(std::make_shared<GroupMean>(group_)) {
  std::unordered_map<size_t, std::string> names;
  for (const auto& item : model.named_parameters()) {
    if (!item.value().requires_grad()) continue;
    const auto sink = factored.find(item.key());
    if (sink != factored.end()) {
      factored_.emplace_back(item.value(), sink->second);
      continue;
    }
    names.emplace(params_.size(), item.key());
    params_.push_back(item.value());
  }
  c10d::verify_params_across_processes(group_->process_group(), params_, std::nullopt);
  const auto bucket_bytes = static_cast<int64_t>(options.bucket_mb * 1024.0 * 1024.0);
  auto [buckets, limits] = c10d::compute_bucket_assignment_by_size(
      params_, {static_cast<size_t>(kFirstBucketBytes), static_cast<size_t>(bucket_bytes)},
      std::vector<bool>(params_.size(), false));
  // Gradients arrive roughly in reverse order of definition: reduce the last layers' first.
  std::reverse(buckets.begin(), buckets.end());
  reducer_ = std::make_unique<c10d::Reducer>(
      params_, std::move(buckets), group_->process_group(),
      std::vector<bool>(params_.size(), false), bucket_bytes, /*find_unused_parameters=*/false,
      /*gradient_as_bucket_view=*/false, std::move(names), kFirstBucketBytes,
      /*skip_all_reduce_unused_params=*/false,
      /*use_python_reducer=*/false, std::vector<int64_t>{});
}

DataParallel::~DataParallel() = default;

void DataParallel::before_forward() {
  // Once, after the first step: buckets in the order the gradients really arrived (a broadcast
  // from rank 0, so every rank keeps the same buckets).
  reducer_->rebuild_buckets();
  reducer_->prepare_for_forward();
}

void DataParallel::before_backward() { reducer_->prepare_for_backward({}); }

void DataParallel::after_backward() {
  std::vector<c10::intrusive_ptr<c10d::Work>> pending;
  factored_bytes_ = 0;
  for (auto& [param, sink] : factored_) {
    // Which of the two a step fills is the same on every rank: it depends on the model and on
    // train.accumulation_steps only. An accumulated step fills both: the first batch's dW̄ in
    // the sink, the later batches' ordinary gradients beside it.
    for (const auto& grad :
         {sink->pending() ? sink->grad : torch::Tensor(), param.mutable_grad()}) {
      if (!grad.defined()) continue;
      grad.div_(group_->size());
      factored_bytes_ += grad.numel() * grad.element_size();
      std::vector<torch::Tensor> tensors{grad};
      pending.push_back(group_->process_group()->allreduce(tensors));
    }
  }
  for (auto& work : pending) work->wait();
}

int64_t DataParallel::gradient_bytes() const {
  int64_t bytes = 0;
  for (const auto& param : params_) bytes += param.numel() * param.element_size();
  return bytes + factored_bytes_;
}

double DataParallel::time_gradient_allreduce(int repeats) const {
  const auto device = params_.empty() ? torch::Device(torch::kCPU) : params_.front().device();
  std::vector<torch::Tensor> buffer{
      torch::zeros({gradient_bytes() / 4}, torch::TensorOptions(device).dtype(torch::kFloat32))};
  group_->process_group()->allreduce(buffer)->wait();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < repeats; ++i) group_->process_group()->allreduce(buffer)->wait();
  const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start);
  return 1000.0 * seconds.count() / repeats;
}

}  // namespace exfusion
