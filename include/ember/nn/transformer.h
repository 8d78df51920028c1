// Attention and transformer modules with PyTorch's parameter names and layouts, so a
// state_dict moves between ember and torch.nn as it is (docs/attention.md):
//   MultiheadAttention       in_proj_weight (3E, E) = [W_q; W_k; W_v], in_proj_bias (3E),
//                            out_proj.weight (E, E), out_proj.bias (E)
//   TransformerEncoderLayer  self_attn.*, linear1, linear2, norm1, norm2
//   TransformerDecoderLayer  self_attn.*, multihead_attn.*, linear1, linear2, norm1, norm2, norm3
//   TransformerEncoder       layers.0.*, layers.1.*, ..., norm (when given a final norm)
// Sequences are (T, N, E) by default and (N, T, E) with batch_first, as in PyTorch.
//
// Masks follow torch.nn.MultiheadAttention, which is NOT the convention of
// scaled_dot_product_attention: a bool attn_mask marks with true the pairs that may NOT attend
// (a float mask is added to the scores); key_padding_mask (N, S) marks padding with true.
// attn_mask is (T, S) or (N * num_heads, T, S). `causal` adds the lower-triangular mask.
#pragma once
#include <cstdint>
#include <memory>

#include "ember/core/generator.h"
#include "ember/nn/layers.h"
#include "ember/nn/module.h"
#include "ember/nn/norm.h"

namespace ember::nn {

// softmax(Q K^T / sqrt(D) + masks) V over num_heads heads of D = embed_dim / num_heads, with
// Q, K, V = query W_q^T + b_q, key W_k^T + b_k, value W_v^T + b_v, and out_proj after.
// Initialised as PyTorch: xavier_uniform in_proj_weight, zero biases, out_proj.weight like
// Linear. `dropout` applies to the attention probabilities in training mode (from gen).
// Returns the output only (no averaged attention weights).
class MultiheadAttention : public Module {
 public:
  MultiheadAttention(int64_t embed_dim, int64_t num_heads, double dropout = 0.0, bool bias = true,
                     bool batch_first = false, Generator* gen = nullptr);
  // query (T, N, E), key and value (S, N, E) (or batch-first). When query, key and value are the
  // same tensor (self-attention) the three projections are one GEMM.
  Tensor forward(const Tensor& query, const Tensor& key, const Tensor& value, const Tensor& key_padding_mask = Tensor(),
                 const Tensor& attn_mask = Tensor(), bool causal = false);
  Tensor operator()(const Tensor& query, const Tensor& key, const Tensor& value) { return forward(query, key, value); }

  int64_t embed_dim() const { return embed_dim_; }
  int64_t num_heads() const { return num_heads_; }
  bool batch_first() const { return batch_first_; }

  Tensor in_proj_weight, in_proj_bias;  // (3E, E), (3E) or undefined
  std::shared_ptr<Linear> out_proj;

 private:
  int64_t embed_dim_, num_heads_;
  double dropout_;
  bool batch_first_;
  Generator* gen_;
};

// gelu_tanh: GELU in its tanh approximation (GPT-2).
enum class Activation { relu, gelu, gelu_tanh };

// The options of a transformer layer, PyTorch's defaults.
struct TransformerLayerOptions {
  int64_t d_model = 512;
  int64_t nhead = 8;
  int64_t dim_feedforward = 2048;
  double dropout = 0.1;
  Activation activation = Activation::relu;
  bool norm_first = false;  // pre-norm (true) or post-norm (false, the original)
  bool batch_first = false;
  double layer_norm_eps = 1e-5;
  Generator* generator = nullptr;  // dropout masks (default generator when null)
};

// post-norm: x = norm1(x + sa(x));  x = norm2(x + ff(x))
// pre-norm:  x = x + sa(norm1(x));  x = x + ff(norm2(x))
// sa(x) = dropout1(self_attn(x, x, x)), ff(x) = dropout2(linear2(dropout(act(linear1(x))))).
class TransformerEncoderLayer : public Module {
 public:
  explicit TransformerEncoderLayer(const TransformerLayerOptions& o);
  TransformerEncoderLayer(int64_t d_model, int64_t nhead, int64_t dim_feedforward = 2048, double dropout = 0.1,
                          Activation activation = Activation::relu, bool norm_first = false, bool batch_first = false,
                          double layer_norm_eps = 1e-5, Generator* gen = nullptr);
  Tensor forward(const Tensor& src, const Tensor& src_mask = Tensor(), const Tensor& src_key_padding_mask = Tensor(),
                 bool is_causal = false);
  Tensor operator()(const Tensor& src) { return forward(src); }
  const TransformerLayerOptions& options() const { return o_; }

  std::shared_ptr<MultiheadAttention> self_attn;
  std::shared_ptr<Linear> linear1, linear2;
  std::shared_ptr<LayerNorm> norm1, norm2;
  std::shared_ptr<Dropout> dropout, dropout1, dropout2;

 private:
  Tensor feed_forward(const Tensor& x);
  TransformerLayerOptions o_;
};

// post-norm: x = norm1(x + sa(x));  x = norm2(x + mha(x, memory));  x = norm3(x + ff(x))
// pre-norm:  x = x + sa(norm1(x));  x = x + mha(norm2(x), memory);  x = x + ff(norm3(x))
class TransformerDecoderLayer : public Module {
 public:
  explicit TransformerDecoderLayer(const TransformerLayerOptions& o);
  TransformerDecoderLayer(int64_t d_model, int64_t nhead, int64_t dim_feedforward = 2048, double dropout = 0.1,
                          Activation activation = Activation::relu, bool norm_first = false, bool batch_first = false,
                          double layer_norm_eps = 1e-5, Generator* gen = nullptr);
  Tensor forward(const Tensor& tgt, const Tensor& memory, const Tensor& tgt_mask = Tensor(),
                 const Tensor& memory_mask = Tensor(), const Tensor& tgt_key_padding_mask = Tensor(),
                 const Tensor& memory_key_padding_mask = Tensor(), bool tgt_is_causal = false,
                 bool memory_is_causal = false);
  const TransformerLayerOptions& options() const { return o_; }

  std::shared_ptr<MultiheadAttention> self_attn, multihead_attn;
  std::shared_ptr<Linear> linear1, linear2;
  std::shared_ptr<LayerNorm> norm1, norm2, norm3;
  std::shared_ptr<Dropout> dropout, dropout1, dropout2, dropout3;

 private:
  Tensor feed_forward(const Tensor& x);
  TransformerLayerOptions o_;
};

// num_layers encoder layers built from one set of options (each with its own weights), then
// an optional final LayerNorm "norm" (use it with pre-norm layers).
class TransformerEncoder : public Module {
 public:
  TransformerEncoder(const TransformerLayerOptions& layer, int64_t num_layers, bool final_norm = false);
  Tensor forward(const Tensor& src, const Tensor& mask = Tensor(), const Tensor& src_key_padding_mask = Tensor(),
                 bool is_causal = false);
  Tensor operator()(const Tensor& src) { return forward(src); }
  std::shared_ptr<TransformerEncoderLayer> layer(size_t i) const { return layers->get<TransformerEncoderLayer>(i); }

  std::shared_ptr<ModuleList> layers;
  std::shared_ptr<LayerNorm> norm;  // null without a final norm
};

// x + weight[offset : offset + T], weight (max_len, d) a trained parameter "weight", N(0, 0.02^2)
// at start. x is (N, T, d) with batch_first, else (T, N, d).
class LearnedPositionalEmbedding : public Module {
 public:
  LearnedPositionalEmbedding(int64_t max_len, int64_t d, bool batch_first = true, Generator* gen = nullptr);
  Tensor forward(const Tensor& x, int64_t offset = 0);
  Tensor operator()(const Tensor& x) { return forward(x); }
  Tensor weight;  // (max_len, d)

 private:
  int64_t max_len_, d_;
  bool batch_first_;
};

// x + pe[offset : offset + T] with the fixed table of Vaswani et al.:
//   pe[t, 2i] = sin(t / 10000^(2i / d)),  pe[t, 2i + 1] = cos(t / 10000^(2i / d))
// stored as the buffer "pe" (max_len, d) (saved and moved with the module, not trained).
class SinusoidalPositionalEmbedding : public Module {
 public:
  SinusoidalPositionalEmbedding(int64_t max_len, int64_t d, bool batch_first = true);
  Tensor forward(const Tensor& x, int64_t offset = 0);
  Tensor operator()(const Tensor& x) { return forward(x); }
  Tensor pe;  // (max_len, d)

 private:
  int64_t max_len_, d_;
  bool batch_first_;
};

}  // namespace ember::nn
