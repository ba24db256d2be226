// The ranks of a data-parallel run as torchrun launches them: rank, world size and rendezvous
// from its environment, a c10d TCPStore, and PyTorch's own process group over it (Gloo for CPU
// tensors, NCCL for CUDA ones). Also what keeps ranks from waiting on each other forever: a
// start gate, a heartbeat, and failures that name the rank that stopped.
#pragma once
#include <torch/types.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

namespace exfusion {

// What torchrun (or any launcher that sets its variables) says about this process.
struct LaunchEnvironment {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent hosts the store, and the workers'
  // keys live under /worker/attempt_<TORCHELASTIC_RESTART_COUNT>, as PyTorch's env:// does.
  bool agent_store = false;
  int restart_count = 0;

  bool distributed() const { return world_size > 1; }
};

// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT and torchrun's agent-store
// variables; one process when WORLD_SIZE is unset. Throws InputError naming the variable when
// one is malformed or missing beside WORLD_SIZE > 1.
LaunchEnvironment launch_environment();

// A rank that stopped taking part (killed, hung, unreachable): what the others exit with.
class PeerFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ProcessGroupOptions {
  // How long a collective or a store operation may wait for the other ranks.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  // Between heartbeats; a rank silent for three of them has stopped.
  std::chrono::milliseconds heartbeat{std::chrono::milliseconds(500)};
};

class DistributedGroup {
 public:
  // Joins the rendezvous (the store) and starts this rank's heartbeat. Blocks until every rank
  // has joined, or options.timeout.
  DistributedGroup(const LaunchEnvironment& env, ProcessGroupOptions options);
  ~DistributedGroup();
  DistributedGroup(const DistributedGroup&) = delete;
  DistributedGroup& operator=(const DistributedGroup&) = delete;

  // Builds the process group for tensors on `device`: NCCL on CUDA (where this build has it),
  // Gloo otherwise; `timeout` from then on. Every rank calls it once, before any collective.
  void connect(const torch::Device& device, std::chrono::milliseconds timeout);

  int rank() const { return env_.rank; }
  int size() const { return env_.world_size; }
  bool writer() const { return env_.rank == 0; }  // rank 0 alone writes files
  std::string backend() const { return backend_; }
  const c10::intrusive_ptr<c10d::ProcessGroup>& process_group() const { return group_; }

  // Synchronous collectives on a tensor of any device (moved to the backend's and back).
  void all_reduce_sum_(torch::Tensor& tensor);
  void all_reduce_max_(torch::Tensor& tensor);
  void broadcast_(torch::Tensor& tensor);  // from rank 0

  // Text through the store: rank 0's value to every rank; every rank's value to every rank.
  std::string broadcast_text(const std::string& key, const std::string& value);
  std::vector<std::string> gather_text(const std::string& key, const std::string& value);

  // Runs `setup` on every rank, then waits until all have finished it. A rank whose setup threw
  // rethrows; the others throw InputError naming it and its message, so that a refusal on one
  // rank (a bad file, a run directory in use) ends every rank instead of hanging them.
  void gate(const std::string& what, const std::function<void()>& setup);

  // Refuses to go on unless every rank's `config` equals rank 0's: InputError naming the first
  // key path that differs and both values.
  void require_same_config(const nlohmann::json& config);

  // Whether to stop at this decision point: every rank calls it at the same points, and all get
  // the same answer a few points after one rank asked (`wants`), however far apart they run.
  bool agree_to_stop(bool wants);

  // The error to end with after `error` came out of a collective: PeerFailure naming the ranks
  // whose heartbeat stopped (or the store's host), nullopt when every rank is still alive.
  std::optional<PeerFailure> peer_failure(const std::exception& error) const;

 private:
  void beat();

  LaunchEnvironment env_;
  ProcessGroupOptions options_;
  std::string backend_;
  torch::Device device_;  // the backend's tensors
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Store> heartbeat_store_;  // a connection of its own
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  std::atomic<bool> stopping_{false};
  std::thread heartbeat_;
  int64_t decision_ = 0;
  int64_t stop_at_ = -1;  // the agreed decision point, once known
  int64_t texts_ = 0;     // a fresh store key per text exchange
};

}  // namespace exfusion
