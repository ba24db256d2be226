// CPU attention kernels (see attention_cpu_kernels.h). LibTorch's CPU attention runs its blocks
// and vectors along the tokens: with 17 tokens per image (the main job) they are too few, and
// with a bias that needs a gradient (T5) it takes its math path, several passes over the scores
// and the heads' permutes and copies around them. Here the vectors run across heads instead: a
// task takes kLanes (batch, head) pairs, lays their q, k and v out with the pair innermost, and
// does every product, exponential and softmax for all of them at once, then writes each pair's
// slice of the output (or of the gradients) back in place.
#include "attention_cpu_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "cpu_vectors.h"

namespace exfusion::cpu {
namespace {

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

// lanes[c] = {rows[0][c], …, rows[15][c]} for c < n: 16 columns at a time through a transpose.
EXFUSION_INLINE void gather_columns(const float* const* rows, int64_t n, Vec* lanes) {
  for (int64_t c = 0; c < n; c += kLanes) {
    const int64_t width = std::min(kLanes, n - c);
    Vec block[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) {
      block[l] = width == kLanes ? load(rows[l] + c) : load_partial(rows[l] + c, width);
    }
    transpose(block);
    std::copy_n(block, width, lanes + c);
  }
}

// The inverse: rows[l][c] = lanes[c][l] for c < n, or rows[l][c] += lanes[c][l] (Accumulate).
template <bool Accumulate>
EXFUSION_INLINE void scatter_columns(const Vec* lanes, int64_t n, float* const* rows) {
  for (int64_t c = 0; c < n; c += kLanes) {
    const int64_t width = std::min(kLanes, n - c);
    Vec block[kLanes];
    std::copy_n(lanes + c, width, block);
    std::fill(block + width, block + kLanes, Vec{});
    transpose(block);
    for (int64_t l = 0; l < kLanes; ++l) {
      float* row = rows[l] + c;
      if (width == kLanes) {
        store(Accumulate ? load(row) + block[l] : block[l], row);
      } else {
        store_partial(Accumulate ? load_partial(row, width) + block[l] : block[l], row, width);
      }
    }
  }
}

// Where each lane's rows of one operand lie: row i at base[l] + i · stride[l]. Lanes past the
// last pair of a short task read a row of zeros and write to a scratch row (stride 0).
template <typename Float>
struct LaneRows {
  Float* base[kLanes];
  int64_t stride[kLanes];
  void rows(int64_t i, Float** out) const {
    for (int64_t l = 0; l < kLanes; ++l) out[l] = base[l] + i * stride[l];
  }
};

// A matrix of lane vectors read with strides: element (row, k) at data[row · row_stride +
// k · depth_stride]; and one written: element (row, column) at data[row · row_stride + column ·
// column_stride].
struct LaneMatrix {
  const Vec* data;
  int64_t row_stride, depth_stride;
  LaneMatrix from(int64_t row) const { return {data + row * row_stride, row_stride, depth_stride}; }
};
struct LaneTarget {
  Vec* data;
  int64_t row_stride, column_stride;
  LaneTarget at(int64_t row, int64_t column) const {
    return {data + row * row_stride + column * column_stride, row_stride, column_stride};
  }
};

// c (+)= a bᵀ on a Rows × Columns block, its sums held in registers across the whole depth: each
// vector loaded from a and b serves Columns (or Rows) products, where one row at a time would
// load a vector per product and wait on the L2 cache.
template <int Rows, int Columns>
EXFUSION_INLINE void product_block(const LaneMatrix& a, const LaneMatrix& b, int64_t depth,
                                   const LaneTarget& c, bool accumulate) {
  Vec sum[Rows][Columns];
  for (int r = 0; r < Rows; ++r) {
    for (int col = 0; col < Columns; ++col) {
      sum[r][col] = accumulate ? c.data[r * c.row_stride + col * c.column_stride] : Vec{};
    }
  }
  for (int64_t k = 0; k < depth; ++k) {
    Vec x[Rows];
    for (int r = 0; r < Rows; ++r) x[r] = a.data[r * a.row_stride + k * a.depth_stride];
    for (int col = 0; col < Columns; ++col) {
      const Vec y = b.data[col * b.row_stride + k * b.depth_stride];
      for (int r = 0; r < Rows; ++r) sum[r][col] += x[r] * y;
    }
  }
  for (int r = 0; r < Rows; ++r) {
    for (int col = 0; col < Columns; ++col) {
      c.data[r * c.row_stride + col * c.column_stride] = sum[r][col];
    }
  }
}

// c[i][j] (+)= Σ_k a[i][k] · b[j][k] for i < rows, j < columns, k < depth: every product of the
// kernels (scores, the weighted sums of values, and each gradient) is one of these, lane-wise.
// Blocks of 4 × 4 keep 16 sums, 4 + 4 loaded vectors and the addresses in registers.
EXFUSION_INLINE void products(const LaneMatrix& a, const LaneMatrix& b, int64_t rows,
                              int64_t columns, int64_t depth, const LaneTarget& c,
                              bool accumulate) {
  constexpr int64_t kBlock = 4;
  int64_t i = 0;
  for (; i + kBlock <= rows; i += kBlock) {
    int64_t j = 0;
    for (; j + kBlock <= columns; j += kBlock) {
      product_block<kBlock, kBlock>(a.from(i), b.from(j), depth, c.at(i, j), accumulate);
    }
    for (; j < columns; ++j) {
      product_block<kBlock, 1>(a.from(i), b.from(j), depth, c.at(i, j), accumulate);
    }
  }
  for (; i < rows; ++i) {
    int64_t j = 0;
    for (; j + kBlock <= columns; j += kBlock) {
      product_block<1, kBlock>(a.from(i), b.from(j), depth, c.at(i, j), accumulate);
    }
    for (; j < columns; ++j) {
      product_block<1, 1>(a.from(i), b.from(j), depth, c.at(i, j), accumulate);
    }
  }
}

// The keys query i sees.
int64_t visible_keys(const AttentionShape& s, int64_t i) {
  return s.causal ? std::min(s.keys, i + s.keys - s.queries + 1) : s.keys;
}

// Query rows of the score block held at once: the scores' and the values' products run over 16
// rows together, and in the backward the probabilities and score gradients (2 · 16 rows of up to
// 256 lane vectors, 512 KB) are reused for every key's gradient.
constexpr int64_t kScoreRows = 16;

// One chunk's scratch, in one allocation aligned for the widest clone's vectors (the default
// target's alignof(Vec) is less, so std::vector would not do).
class Scratch {
 public:
  Scratch(const AttentionShape& s, bool backward) {
    const int64_t query_block = s.queries * s.head_dim, key_block = s.keys * s.head_dim;
    const int64_t score_rows = kScoreRows;
    const int64_t row = std::max(s.head_dim, s.keys);
    const int64_t vectors = (backward ? 4 : 2) * (query_block + key_block) +
                            2 * score_rows * s.keys + s.keys + s.queries;
    const int64_t bytes = vectors * static_cast<int64_t>(sizeof(Vec)) +
                          2 * ((row * static_cast<int64_t>(sizeof(float)) + 63) / 64 * 64);
    storage_.reset(static_cast<char*>(std::aligned_alloc(64, bytes)));
    if (!storage_) throw std::bad_alloc();
    auto* next = reinterpret_cast<Vec*>(storage_.get());
    const auto take = [&](int64_t n) { return std::exchange(next, next + n); };
    q = take(query_block), o = take(query_block), k = take(key_block), v = take(key_block);
    if (backward) {
      g = take(query_block), dq = take(query_block), dk = take(key_block), dv = take(key_block);
    }
    p = take(score_rows * s.keys), ds = take(score_rows * s.keys);
    additive = take(s.keys), log_sum_exp = take(s.queries);
    zeros = reinterpret_cast<float*>(next);
    discard = zeros + (row + 15) / 16 * 16;
    std::fill_n(zeros, row, 0.f);
  }

  Vec *q = nullptr, *o = nullptr, *k = nullptr, *v = nullptr, *g = nullptr, *dq = nullptr,
      *dk = nullptr, *dv = nullptr, *p = nullptr, *ds = nullptr, *additive = nullptr,
      *log_sum_exp = nullptr;
  float* zeros = nullptr;    // the rows lanes past the last pair read
  float* discard = nullptr;  // and write

 private:
  struct Free {
    void operator()(char* pointer) const { std::free(pointer); }
  };
  std::unique_ptr<char, Free> storage_;
};

// A task: kLanes consecutive pairs from `first` (fewer in the last task).
struct Task {
  const AttentionShape& s;
  int64_t first, pairs;

  Task(const AttentionShape& shape, int64_t task)
      : s(shape),
        first(task * kLanes),
        pairs(std::min(kLanes, shape.batch * shape.heads - task * kLanes)) {}

  // An operand's rows: `tokens` rows per batch element, `row_stride` apart, head h's columns
  // from h · head_dim; Float is const float for inputs and float for gradients and outputs.
  template <typename Float>
  LaneRows<Float> rows(Float* data, int64_t tokens, int64_t row_stride, float* missing) const {
    LaneRows<Float> r{};
    for (int64_t l = 0; l < kLanes; ++l) {
      if (l < pairs) {
        const int64_t b = (first + l) / s.heads, h = (first + l) % s.heads;
        r.base[l] = data + b * tokens * row_stride + h * s.head_dim;
        r.stride[l] = row_stride;
      } else {
        r.base[l] = missing;
        r.stride[l] = 0;
      }
    }
    return r;
  }

  // The additive term's (or its gradient's) rows: pair (b, h)'s slice (b mod batches, h); all
  // `missing` without a term.
  template <typename Float>
  LaneRows<Float> additive_rows(Float* data, float* missing) const {
    LaneRows<Float> r{};
    for (int64_t l = 0; l < kLanes; ++l) {
      if (data != nullptr && l < pairs) {
        const int64_t b = (first + l) / s.heads, h = (first + l) % s.heads;
        r.base[l] = data + ((b % s.additive_batches) * s.heads + h) * s.queries * s.keys;
        r.stride[l] = s.keys;
      } else {
        r.base[l] = missing;
        r.stride[l] = 0;
      }
    }
    return r;
  }
};

// Copies `tokens` rows of every lane's operand into a lane block ([token][dim] vectors).
EXFUSION_INLINE void gather_block(const LaneRows<const float>& from, int64_t tokens,
                                  int64_t head_dim, Vec* block) {
  const float* rows[kLanes];
  for (int64_t i = 0; i < tokens; ++i) {
    from.rows(i, rows);
    gather_columns(rows, head_dim, block + i * head_dim);
  }
}

EXFUSION_INLINE void scatter_block(const Vec* block, int64_t tokens, int64_t head_dim,
                                   const LaneRows<float>& to) {
  float* rows[kLanes];
  for (int64_t i = 0; i < tokens; ++i) {
    to.rows(i, rows);
    scatter_columns<false>(block + i * head_dim, head_dim, rows);
  }
}

// The scores of query rows [first, first + rows) against their first `seen` keys (rows 16 apart,
// as LaneTarget score_rows), scaled and with the additive term's rows added; a row's keys past
// the ones it sees are left for the caller to mask.
EXFUSION_INLINE void scores(const AttentionShape& s, const Scratch& b,
                            const LaneRows<const float>* additive, int64_t first, int64_t rows,
                            int64_t seen, Vec* out) {
  const int64_t head_dim = s.head_dim;
  products({b.q + first * head_dim, head_dim, 1}, {b.k, head_dim, 1}, rows, seen, head_dim,
           {out, s.keys, 1}, false);
  const Vec scale = Vec{} + s.scale;
  for (int64_t r = 0; r < rows; ++r) {
    Vec* row = out + r * s.keys;
    for (int64_t j = 0; j < seen; ++j) row[j] *= scale;
    if (additive == nullptr) continue;
    const float* lanes[kLanes];
    additive->rows(first + r, lanes);
    gather_columns(lanes, seen, b.additive);
    for (int64_t j = 0; j < seen; ++j) row[j] += b.additive[j];
  }
}

EXFUSION_SIMD_CLONES
void forward_task(const Task& t, const AttentionOperands& in, float* out, Scratch& b) {
  const auto& s = t.s;
  const int64_t head_dim = s.head_dim, keys = s.keys;
  gather_block(t.rows(in.q, s.queries, in.q_row_stride, b.zeros), s.queries, head_dim, b.q);
  gather_block(t.rows(in.k, keys, in.kv_row_stride, b.zeros), keys, head_dim, b.k);
  gather_block(t.rows(in.v, keys, in.kv_row_stride, b.zeros), keys, head_dim, b.v);
  const auto additive = t.additive_rows(in.additive, b.zeros);
  const auto* additive_rows = in.additive != nullptr ? &additive : nullptr;
  for (int64_t first = 0; first < s.queries; first += kScoreRows) {
    const int64_t rows = std::min(kScoreRows, s.queries - first);
    const int64_t seen = visible_keys(s, first + rows - 1);  // the most any of these rows sees
    scores(s, b, additive_rows, first, rows, seen, b.p);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = visible_keys(s, first + r);
      Vec* p = b.p + r * keys;
      Vec max = p[0];
      for (int64_t j = 1; j < n; ++j) max = p[j] > max ? p[j] : max;
      Vec sum{};
      for (int64_t j = 0; j < n; ++j) {
        p[j] -= max;
        exp_nonpositive(p[j]);
        sum += p[j];
      }
      const Vec inverse = (Vec{} + 1.f) / sum;
      for (int64_t j = 0; j < n; ++j) p[j] *= inverse;
      std::fill(p + n, p + seen, Vec{});
      for (int64_t l = 0; l < kLanes; ++l) {
        b.log_sum_exp[first + r][l] = max[l] + std::log(sum[l]);
      }
    }
    // o_i = Σ_j P_ij v_j: the values read as rows of dims, their depth the keys.
    products({b.p, keys, 1}, {b.v, 1, head_dim}, rows, head_dim, seen,
             {b.o + first * head_dim, head_dim, 1}, false);
  }
  const int64_t width = s.heads * head_dim;
  scatter_block(b.o, s.queries, head_dim, t.rows(out, s.queries, width, b.discard));
}

// dS_ij = P_ij (dO_i · v_j − dO_i · o_i) is the gradient of score (and additive term) ij;
// dq_i = scale Σ_j dS_ij k_j, dk_j = scale Σ_i dS_ij q_i, dv_j = Σ_i P_ij dO_i, with P recomputed
// from the forward's log Σ exp, kScoreRows query rows at a time.
EXFUSION_SIMD_CLONES
void backward_task(const Task& t, const AttentionOperands& in, const float* out,
                   const float* grad_out, const AttentionGradients& grads,
                   float* grad_additive_of_chunk, Scratch& b) {
  const auto& s = t.s;
  const int64_t head_dim = s.head_dim, keys = s.keys, width = s.heads * head_dim;
  gather_block(t.rows(in.q, s.queries, in.q_row_stride, b.zeros), s.queries, head_dim, b.q);
  gather_block(t.rows(in.k, keys, in.kv_row_stride, b.zeros), keys, head_dim, b.k);
  gather_block(t.rows(in.v, keys, in.kv_row_stride, b.zeros), keys, head_dim, b.v);
  gather_block(t.rows(out, s.queries, width, b.zeros), s.queries, head_dim, b.o);
  gather_block(t.rows(grad_out, s.queries, width, b.zeros), s.queries, head_dim, b.g);
  const auto additive = t.additive_rows(in.additive, b.zeros);
  const auto* additive_rows = in.additive != nullptr ? &additive : nullptr;
  const auto grad_additive = t.additive_rows(grad_additive_of_chunk, b.discard);
  std::fill_n(b.dk, keys * head_dim, Vec{});
  std::fill_n(b.dv, keys * head_dim, Vec{});
  for (int64_t first = 0; first < s.queries; first += kScoreRows) {
    const int64_t rows = std::min(kScoreRows, s.queries - first);
    const int64_t seen = visible_keys(s, first + rows - 1);
    const Vec* q = b.q + first * head_dim;
    const Vec* g = b.g + first * head_dim;
    scores(s, b, additive_rows, first, rows, seen, b.p);
    // dP = dO vᵀ
    products({g, head_dim, 1}, {b.v, head_dim, 1}, rows, seen, head_dim, {b.ds, keys, 1}, false);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = first + r, n = visible_keys(s, i);
      Vec* p = b.p + r * keys;
      Vec* ds = b.ds + r * keys;
      Vec delta{};
      for (int64_t d = 0; d < head_dim; ++d) delta += g[r * head_dim + d] * b.o[i * head_dim + d];
      for (int64_t j = 0; j < n; ++j) {
        p[j] -= b.log_sum_exp[i];
        exp_nonpositive(p[j]);
        ds[j] = p[j] * (ds[j] - delta);
      }
      std::fill(p + n, p + seen, Vec{});
      std::fill(ds + n, ds + seen, Vec{});
      if (grad_additive_of_chunk != nullptr) {
        float* targets[kLanes];
        grad_additive.rows(i, targets);
        scatter_columns<true>(ds, n, targets);
      }
    }
    // dq = scale dS k (the keys read as rows of dims); dk += dSᵀ q and dv += Pᵀ dO (the score
    // blocks read by column, their depth these rows), scaled once at the end.
    Vec* dq = b.dq + first * head_dim;
    products({b.ds, keys, 1}, {b.k, 1, head_dim}, rows, head_dim, seen, {dq, head_dim, 1}, false);
    for (int64_t e = 0; e < rows * head_dim; ++e) dq[e] *= s.scale;
    products({b.ds, 1, keys}, {q, 1, head_dim}, seen, head_dim, rows, {b.dk, head_dim, 1}, true);
    products({b.p, 1, keys}, {g, 1, head_dim}, seen, head_dim, rows, {b.dv, head_dim, 1}, true);
  }
  for (int64_t e = 0; e < keys * head_dim; ++e) b.dk[e] *= s.scale;
  scatter_block(b.dq, s.queries, head_dim, t.rows(grads.q, s.queries, in.q_row_stride, b.discard));
  scatter_block(b.dk, keys, head_dim, t.rows(grads.k, keys, in.kv_row_stride, b.discard));
  scatter_block(b.dv, keys, head_dim, t.rows(grads.v, keys, in.kv_row_stride, b.discard));
}

// Each score row's log Σ exp between the task's lane vectors and [pair, query] floats.
void store_log_sum_exp(const Task& t, const Scratch& b, float* log_sum_exp) {
  for (int64_t l = 0; l < t.pairs; ++l) {
    for (int64_t i = 0; i < t.s.queries; ++i) {
      log_sum_exp[(t.first + l) * t.s.queries + i] = b.log_sum_exp[i][l];
    }
  }
}

void load_log_sum_exp(const Task& t, const float* log_sum_exp, Scratch& b) {
  std::fill_n(b.log_sum_exp, t.s.queries, Vec{});
  for (int64_t l = 0; l < t.pairs; ++l) {
    for (int64_t i = 0; i < t.s.queries; ++i) {
      b.log_sum_exp[i][l] = log_sum_exp[(t.first + l) * t.s.queries + i];
    }
  }
}

int64_t task_count(const AttentionShape& s) { return (s.batch * s.heads + kLanes - 1) / kLanes; }

}  // namespace

bool attention_kernels_cover(const AttentionShape& s) {
  const bool sizes = s.batch >= 1 && s.heads >= 1 && s.queries >= 1 && s.keys >= 1 &&
                     s.head_dim >= 1 && s.queries <= kAttentionMaxTokens &&
                     s.keys <= kAttentionMaxTokens && s.head_dim <= kAttentionMaxHeadDim &&
                     std::max(s.queries, s.keys) * s.head_dim <= kAttentionMaxBlock;
  const bool additive =
      s.additive_batches == 0 || (s.additive_batches >= 1 && s.batch % s.additive_batches == 0);
  return sizes && additive && (!s.causal || s.keys >= s.queries);
}

void attention_forward(const AttentionShape& s, const AttentionOperands& operands, float* out,
                       float* log_sum_exp) {
  at::parallel_for(0, task_count(s), 1, [&](int64_t begin, int64_t end) {
    Scratch scratch(s, false);
    for (int64_t task = begin; task < end; ++task) {
      const Task t(s, task);
      forward_task(t, operands, out, scratch);
      store_log_sum_exp(t, scratch, log_sum_exp);
    }
  });
}

void attention_backward(const AttentionShape& s, const AttentionOperands& operands,
                        const float* out, const float* log_sum_exp, const float* grad_out,
                        const AttentionGradients& gradients) {
  const int64_t tasks = task_count(s);
  if (gradients.additive == nullptr) {
    at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
      Scratch scratch(s, true);
      for (int64_t task = begin; task < end; ++task) {
        const Task t(s, task);
        load_log_sum_exp(t, log_sum_exp, scratch);
        backward_task(t, operands, out, grad_out, gradients, nullptr, scratch);
      }
    });
    return;
  }
  // Pairs of several tasks add into one slice of the additive term's gradient (the batch shares
  // it). Fixed groups of consecutive tasks, as many as kAdditiveGroups, each sum into a copy of
  // their own, and the copies are added in group order: the same bits at any thread count.
  constexpr int64_t kAdditiveGroups = 16;
  const int64_t size = s.additive_batches * s.heads * s.queries * s.keys;
  const int64_t groups = std::min(tasks, kAdditiveGroups);
  std::vector<float> partial(static_cast<size_t>(groups * size), 0.f);
  at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
    Scratch scratch(s, true);
    for (int64_t group = begin; group < end; ++group) {
      for (int64_t task = group * tasks / groups; task < (group + 1) * tasks / groups; ++task) {
        const Task t(s, task);
        load_log_sum_exp(t, log_sum_exp, scratch);
        backward_task(t, operands, out, grad_out, gradients, partial.data() + group * size,
                      scratch);
      }
    }
  });
  std::copy_n(partial.data(), size, gradients.additive);
  for (int64_t group = 1; group < groups; ++group) {
    const float* copy = partial.data() + group * size;
    for (int64_t e = 0; e < size; ++e) gradients.additive[e] += copy[e];
  }
}

}  // namespace exfusion::cpu
