// CPU attention kernels for short sequences (see attention_cpu_kernels.h). With 17 tokens per
// image (the main job), LibTorch's CPU flash attention and the heads' permutes and copies around
// it took a fifth of the step: its blocks and vectors run along the tokens, which are too few.
// Here the vectors run across heads instead: a task takes kLanes (batch, head) pairs, lays their
// q, k and v out with the pair innermost, and does every product and exponential for all of them
// at once, then writes each pair's slice of the output (or of grad_qkv) back in place.
#include "attention_cpu_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

#include "cpu_vectors.h"

namespace exfusion::cpu {
namespace {

// A task's vectors (cpu_vectors.h) hold one lane per (batch, head) pair.
// The task's layout: element (token t, dim d) of every pair at vector [t · head_dim + d].
struct TaskShape {
  int64_t tokens, head_dim, heads, row_stride, out_stride, pairs, first;
};

TaskShape task_shape(const ShortAttentionShape& s, int64_t task) {
  const int64_t width = s.heads * s.head_dim;
  const int64_t first = task * kLanes;
  return {s.tokens,  s.head_dim, s.heads,
          3 * width, width,      std::min(kLanes, s.batch * s.heads - first),
          first};
}

// Offsets of pair p's row 0 in the packed qkv rows and in the output rows.
int64_t qkv_offset(const TaskShape& t, int64_t pair) {
  const int64_t b = pair / t.heads, h = pair % t.heads;
  return b * t.tokens * t.row_stride + h * t.head_dim;
}
int64_t out_offset(const TaskShape& t, int64_t pair) {
  const int64_t b = pair / t.heads, h = pair % t.heads;
  return b * t.tokens * t.out_stride + h * t.head_dim;
}

// One stage of a 16 × 16 transpose in registers: rows r and r + W (r without bit W) exchange
// bit W of the column index with bit W of the row index, in two two-source shuffles (index
// 16 + c is b's column c). The four stages W = 8, 4, 2, 1 exchange every bit: rows[r][c]
// becomes rows[c][r].
template <int W, int... Column>
EXFUSION_INLINE void transpose_stage(Vec* rows, std::integer_sequence<int, Column...>) {
  for (int r = 0; r < kLanes; ++r) {
    if ((r & W) != 0) continue;
    const Vec a = rows[r], b = rows[r + W];
    rows[r] = __builtin_shufflevector(a, b, ((Column & W) != 0 ? 16 + Column - W : Column)...);
    rows[r + W] = __builtin_shufflevector(a, b, ((Column & W) != 0 ? 16 + Column : Column + W)...);
  }
}

EXFUSION_INLINE void transpose(Vec* rows) {
  constexpr auto columns = std::make_integer_sequence<int, kLanes>{};
  transpose_stage<8>(rows, columns);
  transpose_stage<4>(rows, columns);
  transpose_stage<2>(rows, columns);
  transpose_stage<1>(rows, columns);
}

// Where each of the task's pairs' [tokens, head_dim] block starts (rows `stride` apart).
struct PairBlocks {
  const TaskShape& t;
  int64_t stride;
  bool output_layout;
  int64_t offset(int64_t lane) const {
    const int64_t pair = t.first + lane;
    return output_layout ? out_offset(t, pair) : qkv_offset(t, pair);
  }
  // A full task with whole 16-float groups per row moves in 16 × 16 transposes; anything else
  // (a short last task, an odd head width) element by element.
  bool transposes() const { return t.pairs == kLanes && t.head_dim % kLanes == 0; }
};

// Copies the task's pairs' blocks into the lane layout; missing pairs of a short last task are
// zeros. The element-by-element path goes token by token, so that its 16 passes over one
// token's vectors (a few KB) stay in L1, and through a float view of the vectors (GCC's vector
// types alias their element type): writing one lane of a vector in memory would load, insert
// and store the whole vector.
EXFUSION_SIMD_CLONES
void gather(const PairBlocks& blocks, const float* source, Vec* lanes) {
  const auto& t = blocks.t;
  if (blocks.transposes()) {
    const float* rows_of[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) rows_of[l] = source + blocks.offset(l);
    for (int64_t i = 0; i < t.tokens; ++i) {
      for (int64_t d = 0; d < t.head_dim; d += kLanes) {
        Vec rows[kLanes];
        for (int64_t l = 0; l < kLanes; ++l) {
          std::memcpy(&rows[l], rows_of[l] + i * blocks.stride + d, sizeof(Vec));
        }
        transpose(rows);
        std::copy_n(rows, kLanes, lanes + i * t.head_dim + d);
      }
    }
    return;
  }
  std::fill_n(lanes, t.tokens * t.head_dim, Vec{});
  auto* floats = reinterpret_cast<float*>(lanes);
  for (int64_t i = 0; i < t.tokens; ++i) {
    for (int64_t l = 0; l < t.pairs; ++l) {
      const float* row = source + blocks.offset(l) + i * blocks.stride;
      float* lane = floats + i * t.head_dim * kLanes + l;
      for (int64_t d = 0; d < t.head_dim; ++d) lane[d * kLanes] = row[d];
    }
  }
}

// The inverse of gather: each pair's lanes back into its block.
EXFUSION_SIMD_CLONES
void scatter(const PairBlocks& blocks, const Vec* lanes, float* target) {
  const auto& t = blocks.t;
  if (blocks.transposes()) {
    float* rows_of[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) rows_of[l] = target + blocks.offset(l);
    for (int64_t i = 0; i < t.tokens; ++i) {
      for (int64_t d = 0; d < t.head_dim; d += kLanes) {
        Vec rows[kLanes];
        std::copy_n(lanes + i * t.head_dim + d, kLanes, rows);
        transpose(rows);
        for (int64_t l = 0; l < kLanes; ++l) {
          std::memcpy(rows_of[l] + i * blocks.stride + d, &rows[l], sizeof(Vec));
        }
      }
    }
    return;
  }
  const auto* floats = reinterpret_cast<const float*>(lanes);
  for (int64_t i = 0; i < t.tokens; ++i) {
    for (int64_t l = 0; l < t.pairs; ++l) {
      float* row = target + blocks.offset(l) + i * blocks.stride;
      const float* lane = floats + i * t.head_dim * kLanes + l;
      for (int64_t d = 0; d < t.head_dim; ++d) row[d] = lane[d * kLanes];
    }
  }
}

// scores[j] = scale · a_i · b_j over the head's dims, for every token j.
EXFUSION_INLINE void row_products(const Vec* a_i, const Vec* b, int64_t tokens, int64_t head_dim,
                                  float scale, Vec* scores) {
  for (int64_t j = 0; j < tokens; ++j) {
    const Vec* b_j = b + j * head_dim;
    Vec acc{};
    for (int64_t d = 0; d < head_dim; ++d) acc += a_i[d] * b_j[d];
    scores[j] = acc * scale;
  }
}

// row[d] += Σ_j weights[j] · m_j[d], m_j the token j's row of a lane-layout block.
EXFUSION_INLINE void weighted_rows(const Vec* weights, const Vec* m, int64_t tokens,
                                   int64_t head_dim, Vec* row) {
  for (int64_t j = 0; j < tokens; ++j) {
    const Vec* m_j = m + j * head_dim;
    const Vec w = weights[j];
    for (int64_t d = 0; d < head_dim; ++d) row[d] += w * m_j[d];
  }
}

// One task's blocks, in one allocation aligned for the widest clone's vectors (the default
// target's alignof(Vec) is less, so std::vector would not do).
struct Buffers {
  Vec *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr, *g = nullptr, *dq = nullptr,
      *dk = nullptr, *dv = nullptr, *p = nullptr, *dp = nullptr, *log_sum_exp = nullptr;

  Buffers(const TaskShape& t, bool backward) {
    const int64_t block = t.tokens * t.head_dim;
    const int64_t count = (backward ? 8 : 4) * block + 3 * t.tokens;
    storage_.reset(static_cast<Vec*>(std::aligned_alloc(64, count * sizeof(Vec))));
    if (!storage_) throw std::bad_alloc();
    Vec* next = storage_.get();
    const auto take = [&](int64_t n) { return std::exchange(next, next + n); };
    for (auto** b : {&q, &k, &v, &o}) *b = take(block);
    if (backward) {
      for (auto** b : {&g, &dq, &dk, &dv}) *b = take(block);
    }
    for (auto** b : {&p, &dp, &log_sum_exp}) *b = take(t.tokens);
  }

 private:
  struct Free {
    void operator()(Vec* pointer) const { std::free(pointer); }
  };
  std::unique_ptr<Vec, Free> storage_;
};

EXFUSION_SIMD_CLONES
void forward_lanes(const TaskShape& t, float scale, Buffers& b) {
  const int64_t tokens = t.tokens, head_dim = t.head_dim;
  std::fill_n(b.o, tokens * head_dim, Vec{});
  Vec* p = b.p;
  for (int64_t i = 0; i < tokens; ++i) {
    row_products(b.q + i * head_dim, b.k, tokens, head_dim, scale, p);
    Vec max = p[0];
    for (int64_t j = 1; j < tokens; ++j) max = p[j] > max ? p[j] : max;
    Vec sum{};
    for (int64_t j = 0; j < tokens; ++j) {
      p[j] -= max;
      exp_nonpositive(p[j]);
      sum += p[j];
    }
    const Vec inverse = (Vec{} + 1.f) / sum;
    for (int64_t j = 0; j < tokens; ++j) p[j] *= inverse;
    weighted_rows(p, b.v, tokens, head_dim, b.o + i * head_dim);
    for (int64_t l = 0; l < kLanes; ++l) b.log_sum_exp[i][l] = max[l] + std::log(sum[l]);
  }
}

// dS_ij = P_ij (dO_i · v_j − dO_i · o_i); dq_i = scale Σ_j dS_ij k_j, dk_j = scale Σ_i dS_ij q_i,
// dv_j = Σ_i P_ij dO_i, with P recomputed from the forward's log Σ exp.
EXFUSION_SIMD_CLONES
void backward_lanes(const TaskShape& t, float scale, Buffers& b) {
  const int64_t tokens = t.tokens, head_dim = t.head_dim;
  for (auto* buffer : {b.dq, b.dk, b.dv}) std::fill_n(buffer, tokens * head_dim, Vec{});
  Vec* p = b.p;
  Vec* ds = b.dp;
  for (int64_t i = 0; i < tokens; ++i) {
    const Vec* q_i = b.q + i * head_dim;
    const Vec* g_i = b.g + i * head_dim;
    const Vec* o_i = b.o + i * head_dim;
    row_products(q_i, b.k, tokens, head_dim, scale, p);
    for (int64_t j = 0; j < tokens; ++j) {
      p[j] -= b.log_sum_exp[i];
      exp_nonpositive(p[j]);
    }
    Vec delta{};
    for (int64_t d = 0; d < head_dim; ++d) delta += g_i[d] * o_i[d];
    row_products(g_i, b.v, tokens, head_dim, 1.f, ds);
    for (int64_t j = 0; j < tokens; ++j) ds[j] = p[j] * (ds[j] - delta) * scale;
    weighted_rows(ds, b.k, tokens, head_dim, b.dq + i * head_dim);
    for (int64_t j = 0; j < tokens; ++j) {
      Vec* dk_j = b.dk + j * head_dim;
      Vec* dv_j = b.dv + j * head_dim;
      const Vec ds_ij = ds[j], p_ij = p[j];
      for (int64_t d = 0; d < head_dim; ++d) {
        dk_j[d] += ds_ij * q_i[d];
        dv_j[d] += p_ij * g_i[d];
      }
    }
  }
}

// q, k and v: the three D-wide thirds of each packed qkv row.
void gather_qkv(const PairBlocks& blocks, const float* qkv, Buffers& b) {
  const int64_t width = blocks.t.out_stride;
  gather(blocks, qkv, b.q);
  gather(blocks, qkv + width, b.k);
  gather(blocks, qkv + 2 * width, b.v);
}

int64_t task_count(const ShortAttentionShape& s) {
  return (s.batch * s.heads + kLanes - 1) / kLanes;
}

}  // namespace

void short_attention_forward(const ShortAttentionShape& s, const float* qkv, float* out,
                             float* log_sum_exp) {
  at::parallel_for(0, task_count(s), 1, [&](int64_t begin, int64_t end) {
    Buffers b(task_shape(s, begin), false);
    for (int64_t task = begin; task < end; ++task) {
      const auto t = task_shape(s, task);
      const PairBlocks in_qkv{t, t.row_stride, false}, in_out{t, t.out_stride, true};
      gather_qkv(in_qkv, qkv, b);
      forward_lanes(t, s.scale, b);
      scatter(in_out, b.o, out);
      for (int64_t l = 0; l < t.pairs; ++l) {
        for (int64_t i = 0; i < t.tokens; ++i) {
          log_sum_exp[(t.first + l) * t.tokens + i] = b.log_sum_exp[i][l];
        }
      }
    }
  });
}

void short_attention_backward(const ShortAttentionShape& s, const float* qkv, const float* out,
                              const float* log_sum_exp, const float* grad_out, float* grad_qkv) {
  at::parallel_for(0, task_count(s), 1, [&](int64_t begin, int64_t end) {
    Buffers b(task_shape(s, begin), true);
    for (int64_t task = begin; task < end; ++task) {
      const auto t = task_shape(s, task);
      const PairBlocks in_qkv{t, t.row_stride, false}, in_out{t, t.out_stride, true};
      gather_qkv(in_qkv, qkv, b);
      gather(in_out, out, b.o);
      gather(in_out, grad_out, b.g);
      std::fill_n(b.log_sum_exp, t.tokens, Vec{});
      for (int64_t l = 0; l < t.pairs; ++l) {
        for (int64_t i = 0; i < t.tokens; ++i) {
          b.log_sum_exp[i][l] = log_sum_exp[(t.first + l) * t.tokens + i];
        }
      }
      backward_lanes(t, s.scale, b);
      scatter(in_qkv, b.dq, grad_qkv);
      scatter(in_qkv, b.dk, grad_qkv + t.out_stride);
      scatter(in_qkv, b.dv, grad_qkv + 2 * t.out_stride);
    }
  });
}

}  // namespace exfusion::cpu
