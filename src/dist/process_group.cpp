// The launch environment, the c10d store and process group, and the checks around them (see
// process_group.h). Keys of ours live under "exfusion/" in the store, apart from c10d's own.
#include "exfusion/dist/process_group.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef EXFUSION_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef EXFUSION_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>
#include <sstream>
#include <vector>

#include "exfusion/util/error.h"

namespace exfusion {
namespace {

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

// An integer variable in [low, high]; InputError naming it otherwise.
int integer_variable(const char* name, int fallback, int low, int high, bool required) {
  const auto text = environment(name);
  if (text.empty()) {
    if (required) {
      throw InputError(std::string("environment variable ") + name +
                       " is not set: with WORLD_SIZE > 1 the launcher (torchrun) must set RANK, "
                       "LOCAL_RANK, MASTER_ADDR and MASTER_PORT");
    }
    return fallback;
  }
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text.c_str(), &end, 10);
  if (errno != 0 || end == text.c_str() || *end != '\0' || value < low || value > high) {
    throw InputError(std::string("environment variable ") + name + "=" + text +
                     ": expected an integer in [" + std::to_string(low) + ", " +
                     std::to_string(high) + "]");
  }
  return static_cast<int>(value);
}

std::string text_of(const std::vector<uint8_t>& bytes) { return {bytes.begin(), bytes.end()}; }
std::vector<uint8_t> bytes_of(const std::string& text) { return {text.begin(), text.end()}; }

// "train.seed" for nlohmann's flattened "/train/seed" (config keys hold no '/' or '~').
std::string dotted(const std::string& pointer) {
  std::string path = pointer.substr(pointer.empty() ? 0 : 1);
  for (auto& c : path) {
    if (c == '/') c = '.';
  }
  return path;
}

#ifdef EXFUSION_WITH_GLOO
c10::intrusive_ptr<c10d::Backend> gloo_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                               const LaunchEnvironment& env,
                                               std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  // As torch.distributed does: GLOO_SOCKET_IFNAME picks the interface, else this host's name.
  const auto interface = environment("GLOO_SOCKET_IFNAME");
  options->devices.push_back(interface.empty()
                                 ? c10d::ProcessGroupGloo::createDefaultDevice()
                                 : c10d::ProcessGroupGloo::createDeviceForInterface(interface));
  return c10::make_intrusive<c10d::ProcessGroupGloo>(
      c10::make_intrusive<c10d::PrefixStore>("gloo", store), env.rank, env.world_size, options);
}
#endif

}  // namespace

LaunchEnvironment launch_environment() {
  LaunchEnvironment env;
  env.world_size = integer_variable("WORLD_SIZE", 1, 1, 1 << 16, false);
  if (!env.distributed()) return env;
  env.rank = integer_variable("RANK", 0, 0, env.world_size - 1, true);
  env.local_rank = integer_variable("LOCAL_RANK", 0, 0, env.world_size - 1, true);
  env.master_addr = environment("MASTER_ADDR");
  if (env.master_addr.empty()) integer_variable("MASTER_ADDR", 0, 0, 0, true);
  env.master_port = integer_variable("MASTER_PORT", 0, 1, 65535, true);
  env.agent_store = environment("TORCHELASTIC_USE_AGENT_STORE") == "True";
  env.restart_count = integer_variable("TORCHELASTIC_RESTART_COUNT", 0, 0, 1 << 20, false);
  return env;
}

DistributedGroup::DistributedGroup(const LaunchEnvironment& env, ProcessGroupOptions options)
    : env_(env), options_(options), device_(torch::kCPU) {
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(env.master_port);
  // Under torchrun's agent the agent hosts the store; launched by hand, rank 0 does.
  store_options.isServer = !env.agent_store && env.rank == 0;
  // Every rank counts itself in, so that a hosting rank 0 waits until all have joined.
  store_options.numWorkers = env.world_size;
  store_options.timeout = options.timeout;
  store_options.multiTenant = true;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, store_options);
  } catch (const std::exception& error) {
    throw PeerFailure("rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                      ": no rendezvous at " + env.master_addr + ":" +
                      std::to_string(env.master_port) + " within " +
                      std::to_string(options.timeout.count() / 1000) + " s (" + error.what() + ")");
  }
  if (env.agent_store) {
    store = c10::make_intrusive<c10d::PrefixStore>(
        "/worker/attempt_" + std::to_string(env.restart_count), store);
  }
  store_ = c10::make_intrusive<c10d::PrefixStore>("exfusion", store);
  heartbeat_store_ = store_->clone();
  heartbeat_ = std::thread([this] { beat(); });
}

void DistributedGroup::connect(const torch::Device& device, std::chrono::milliseconds timeout) {
  options_.timeout = timeout;
  store_->setTimeout(timeout);
  group_ = c10::make_intrusive<c10d::ProcessGroup>(store_, env_.rank, env_.world_size);
  if (device.is_cuda()) {
#ifdef EXFUSION_WITH_NCCL
    auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
    nccl_options->timeout = timeout;
    auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        c10::make_intrusive<c10d::PrefixStore>("nccl", store_), env_.rank, env_.world_size,
        nccl_options);
    group_->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, nccl);
    group_->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
    backend_ = "nccl";
    device_ = device;
#else
    throw InputError("train.device = " + device.str() +
                     " with WORLD_SIZE > 1 needs NCCL, and this build has none (it was built "
                     "without NCCL's headers); train on the CPU with Gloo or rebuild");
#endif
  } else {
#ifdef EXFUSION_WITH_GLOO
    group_->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO,
                       gloo_backend(store_, env_, timeout));
    group_->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    backend_ = "gloo";
#else
    throw InputError("train.device = " + device.str() +
                     " with WORLD_SIZE > 1 needs Gloo, and this build has none (gloo's headers, "
                     "Debian's libgloo-dev, were missing when it was built); scripts/setup.sh "
                     "installs them");
#endif
  }
}

DistributedGroup::~DistributedGroup() {
  stopping_ = true;
  if (heartbeat_.joinable()) heartbeat_.join();
}

void DistributedGroup::beat() {
  const auto name = "heartbeat/" + std::to_string(env_.rank);
  try {
    while (!stopping_) {
      heartbeat_store_->add(name, 1);
      const auto until = std::chrono::steady_clock::now() + options_.heartbeat;
      while (!stopping_ && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  } catch (const std::exception&) {
    // The store is gone (its host stopped): the collectives report that, not this thread.
  }
}

void DistributedGroup::all_reduce_sum_(torch::Tensor& tensor) {
  std::vector<torch::Tensor> tensors{tensor.to(device_)};
  group_->allreduce(tensors)->wait();
  if (tensors[0].data_ptr() != tensor.data_ptr()) tensor.copy_(tensors[0]);
}

void DistributedGroup::all_reduce_max_(torch::Tensor& tensor) {
  std::vector<torch::Tensor> tensors{tensor.to(device_)};
  c10d::AllreduceOptions options;
  options.reduceOp = c10d::ReduceOp::MAX;
  group_->allreduce(tensors, options)->wait();
  if (tensors[0].data_ptr() != tensor.data_ptr()) tensor.copy_(tensors[0]);
}

void DistributedGroup::broadcast_(torch::Tensor& tensor) {
  std::vector<torch::Tensor> tensors{tensor.to(device_).contiguous()};
  group_->broadcast(tensors)->wait();
  if (tensors[0].data_ptr() != tensor.data_ptr()) tensor.copy_(tensors[0]);
}

std::string DistributedGroup::broadcast_text(const std::string& name, const std::string& value) {
  const auto full = "text/" + std::to_string(texts_++) + "/" + name;
  if (writer()) {
    store_->set(full, bytes_of(value));
    return value;
  }
  return text_of(store_->get(full));
}

std::vector<std::string> DistributedGroup::gather_text(const std::string& name,
                                                       const std::string& value) {
  const auto prefix = "text/" + std::to_string(texts_++) + "/" + name + "/";
  store_->set(prefix + std::to_string(env_.rank), bytes_of(value));
  std::vector<std::string> values;
  values.reserve(env_.world_size);
  for (int r = 0; r < env_.world_size; ++r) {
    values.push_back(text_of(store_->get(prefix + std::to_string(r))));
  }
  return values;
}

void DistributedGroup::gate(const std::string& what, const std::function<void()>& setup) {
  const auto prefix = "gate/" + what + "/";
  try {
    setup();
  } catch (const std::exception& error) {
    store_->set(prefix + std::to_string(env_.rank),
                bytes_of(std::string("failed: ") + error.what()));
    throw;
  }
  store_->set(prefix + std::to_string(env_.rank), bytes_of("ok"));
  for (int r = 0; r < env_.world_size; ++r) {
    if (r == env_.rank) continue;
    std::string status;
    try {
      status = text_of(store_->get(prefix + std::to_string(r)));
    } catch (const std::exception& error) {
      if (auto failure = peer_failure(error)) throw *failure;
      throw;
    }
    if (status != "ok") {
      throw InputError("rank " + std::to_string(r) + " of " + std::to_string(env_.world_size) +
                       " could not " + what + " (" + status.substr(std::string("failed: ").size()) +
                       "); every rank stops");
    }
  }
}

void DistributedGroup::require_same_config(const nlohmann::json& config) {
  const auto reference = nlohmann::json::parse(broadcast_text("config", config.dump()));
  if (reference == config) return;
  const auto mine = config.flatten();
  const auto theirs = reference.flatten();
  std::string path;
  for (const auto& [pointer, value] : theirs.items()) {
    if (!mine.contains(pointer) || mine[pointer] != value) {
      path = pointer;
      break;
    }
  }
  if (path.empty()) {
    for (const auto& [pointer, value] : mine.items()) {
      if (!theirs.contains(pointer)) {
        path = pointer;
        break;
      }
    }
  }
  const auto shown = [](const nlohmann::json& flat, const std::string& at) {
    return flat.contains(at) ? flat[at].dump() : std::string("(absent)");
  };
  throw InputError("rank " + std::to_string(env_.rank) + "'s config differs from rank 0's at " +
                   dotted(path) + ": " + shown(mine, path) + " here, " + shown(theirs, path) +
                   " on rank 0; every rank of a run must be given the same config");
}

bool DistributedGroup::agree_to_stop(bool wants) {
  ++decision_;
  const auto name = "stop_at";
  if (stop_at_ < 0) {
    if (wants) {
      // The first rank to ask sets the point two decisions ahead: no rank can be more than one
      // decision past another (a collective lies between any two), so every rank still sees
      // the key before it passes the point.
      const auto proposed = bytes_of(std::to_string(decision_ + 2));
      stop_at_ = std::stoll(text_of(store_->compareSet(name, {}, proposed)));
    } else if (store_->check({name})) {
      stop_at_ = std::stoll(text_of(store_->get(name)));
    }
  }
  return stop_at_ >= 0 && decision_ >= stop_at_;
}

std::optional<PeerFailure> DistributedGroup::peer_failure(const std::exception& error) const {
  const auto where = "rank " + std::to_string(env_.rank) + " of " + std::to_string(env_.world_size);
  std::vector<int64_t> before, after;
  try {
    auto probe = heartbeat_store_->clone();
    const auto read = [&] {
      std::vector<int64_t> counts;
      counts.reserve(env_.world_size);
      for (int r = 0; r < env_.world_size; ++r) {
        counts.push_back(probe->add("heartbeat/" + std::to_string(r), 0));
      }
      return counts;
    };
    before = read();
    std::this_thread::sleep_for(options_.heartbeat * 3);
    after = read();
  } catch (const std::exception& store_error) {
    return PeerFailure(where + ": the rendezvous store at " + env_.master_addr + ":" +
                       std::to_string(env_.master_port) + " is gone" +
                       (env_.agent_store ? "" : " (rank 0 hosts it: rank 0 stopped)") +
                       "; this rank stops too. The collective failed with: " + error.what());
  }
  std::ostringstream stopped;
  int count = 0;
  for (int r = 0; r < env_.world_size; ++r) {
    if (r != env_.rank && after[r] == before[r]) stopped << (count++ ? ", " : "") << r;
  }
  if (count == 0) return std::nullopt;
  return PeerFailure(where + ": rank" + (count > 1 ? "s " : " ") + stopped.str() +
                     (count > 1 ? " have" : " has") + " stopped (no heartbeat for " +
                     std::to_string(3 * options_.heartbeat.count()) +
                     " ms); this rank stops too. The collective failed with: " + error.what());
}

}  // namespace exfusion
