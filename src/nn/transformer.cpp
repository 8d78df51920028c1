// The modules of transformer.h, composed from Linear, LayerNorm, Dropout and
// scaled_dot_product_attention (which picks the fused kernel where it can).
#include "ember/nn/transformer.h"

#include <cmath>
#include <string>
#include <vector>

#include "ember/core/error.h"
#include "ember/nn/init.h"
#include "ember/ops/attention.h"
#include "ember/ops/ops.h"

namespace ember::nn {
namespace {

// y = x w^T + b over the last dim of x (..., in) -> (..., out); b may be undefined.
Tensor project(const Tensor& x, const Tensor& w, const Tensor& b) { return linear(x, w, b); }

Tensor narrow_or_none(const Tensor& t, int64_t start, int64_t len) {
  return t.defined() ? t.narrow(0, start, len) : Tensor();
}

Tensor activate(Activation a, const Tensor& x) {
  switch (a) {
    case Activation::relu: return relu(x);
    case Activation::gelu: return gelu(x);
    case Activation::gelu_tanh: return gelu(x, "tanh");
  }
  return relu(x);
}

void check_layer_options(const char* op, const TransformerLayerOptions& o) {
  EMBER_CHECK(o.d_model > 0 && o.nhead > 0 && o.dim_feedforward > 0, op,
              "d_model, nhead and dim_feedforward must be positive, got (", o.d_model, ", ", o.nhead, ", ",
              o.dim_feedforward, ")");
  EMBER_CHECK(o.dropout >= 0 && o.dropout <= 1, op, "dropout ", o.dropout, " outside [0, 1]");
}

TransformerLayerOptions layer_options(int64_t d_model, int64_t nhead, int64_t ff, double dropout, Activation act,
                                      bool norm_first, bool batch_first, double eps, Generator* gen) {
  TransformerLayerOptions o;
  o.d_model = d_model;
  o.nhead = nhead;
  o.dim_feedforward = ff;
  o.dropout = dropout;
  o.activation = act;
  o.norm_first = norm_first;
  o.batch_first = batch_first;
  o.layer_norm_eps = eps;
  o.generator = gen;
  return o;
}

}  // namespace

// --- MultiheadAttention ------------------------------------------------------------------------

MultiheadAttention::MultiheadAttention(int64_t embed_dim, int64_t num_heads, double dropout, bool bias,
                                       bool batch_first, Generator* gen)
    : embed_dim_(embed_dim), num_heads_(num_heads), dropout_(dropout), batch_first_(batch_first), gen_(gen) {
  EMBER_CHECK(embed_dim > 0 && num_heads > 0, "MultiheadAttention", "embed_dim and num_heads must be positive, got (",
              embed_dim, ", ", num_heads, ")");
  EMBER_CHECK(embed_dim % num_heads == 0, "MultiheadAttention", "embed_dim ", embed_dim,
              " is not divisible by num_heads ", num_heads);
  EMBER_CHECK(dropout >= 0 && dropout <= 1, "MultiheadAttention", "dropout ", dropout, " outside [0, 1]");
  const Shape in_proj{checked_mul(3, embed_dim, "MultiheadAttention"), embed_dim};
  checked_numel(in_proj, "MultiheadAttention");
  Tensor w = empty(in_proj);
  init::xavier_uniform_(w, 1.0, gen);
  in_proj_weight = register_parameter("in_proj_weight", w);
  if (bias) in_proj_bias = register_parameter("in_proj_bias", zeros({in_proj[0]}));
  out_proj = register_module("out_proj", std::make_shared<Linear>(embed_dim, embed_dim, bias, gen));
  if (bias) init::zeros_(out_proj->bias);
}

Tensor MultiheadAttention::forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                   const Tensor& key_padding_mask, const Tensor& attn_mask, bool causal) {
  const char* op = "MultiheadAttention";
  const int64_t E = embed_dim_, H = num_heads_, D = E / H;
  EMBER_CHECK(query.defined() && key.defined() && value.defined(), op, "query, key and value must be defined");
  const auto check_seq = [&](const char* what, const Tensor& t) {
    EMBER_CHECK(t.dim() == 3 && t.size(2) == E, op, what, " must be ",
                batch_first_ ? "(N, T, E)" : "(T, N, E)", " with E = embed_dim = ", E, ", got ", shape_str(t.shape()));
  };
  check_seq("query", query);
  check_seq("key", key);
  check_seq("value", value);
  const int64_t bdim = batch_first_ ? 0 : 1, tdim = 1 - bdim;
  const int64_t N = query.size(bdim), T = query.size(tdim), S = key.size(tdim);
  EMBER_CHECK(key.size(bdim) == N && value.size(bdim) == N && value.size(tdim) == S, op,
              "batch or source lengths differ: query ", shape_str(query.shape()), ", key ", shape_str(key.shape()),
              ", value ", shape_str(value.shape()));

  // Projections: one GEMM for self-attention, one for key and value when they are the same.
  Tensor q, k, v;
  if (query.is_same(key) && key.is_same(value)) {
    std::vector<Tensor> qkv = chunk(project(query, in_proj_weight, in_proj_bias), 3, -1);
    q = qkv[0], k = qkv[1], v = qkv[2];
  } else {
    q = project(query, in_proj_weight.narrow(0, 0, E), narrow_or_none(in_proj_bias, 0, E));
    if (key.is_same(value)) {
      std::vector<Tensor> kv = chunk(project(key, in_proj_weight.narrow(0, E, 2 * E), narrow_or_none(in_proj_bias, E, 2 * E)), 2, -1);
      k = kv[0], v = kv[1];
    } else {
      k = project(key, in_proj_weight.narrow(0, E, E), narrow_or_none(in_proj_bias, E, E));
      v = project(value, in_proj_weight.narrow(0, 2 * E, E), narrow_or_none(in_proj_bias, 2 * E, E));
    }
  }
  // (T, N, E) -> (T, N, H, D) -> (N, H, T, D); batch-first (N, T, E) -> (N, T, H, D) -> (N, H, T, D).
  const Shape to_heads = batch_first_ ? Shape{0, 2, 1, 3} : Shape{1, 2, 0, 3};
  const auto heads = [&](const Tensor& t, int64_t len) {
    return (batch_first_ ? t.reshape({N, len, H, D}) : t.reshape({len, N, H, D})).permute(to_heads);
  };

  AttentionOptions o;
  o.causal = causal;
  o.dropout = is_training() ? dropout_ : 0.0;
  o.generator = gen_;
  o.key_padding_mask = key_padding_mask;
  if (attn_mask.defined()) {
    Tensor m = attn_mask;
    if (m.dim() == 3) {
      EMBER_CHECK(m.size(0) == N * H && m.size(1) == T && m.size(2) == S, op, "a 3-D attn_mask must be (N * num_heads, T, S) = ",
                  shape_str({N * H, T, S}), ", got ", shape_str(m.shape()));
      m = m.reshape({N, H, T, S});
    } else {
      EMBER_CHECK(m.dim() == 2 && m.size(0) == T && m.size(1) == S, op, "attn_mask must be (T, S) = ",
                  shape_str({T, S}), " or (N * num_heads, T, S), got ", shape_str(m.shape()));
    }
    o.attn_mask = m.dtype() == DType::boolean ? logical_not(m) : m;  // PyTorch: true = may not attend
  }
  Tensor a = scaled_dot_product_attention(heads(q, T), heads(k, S), heads(v, S), o);  // (N, H, T, D)
  a = batch_first_ ? a.permute({0, 2, 1, 3}).reshape({N, T, E}) : a.permute({2, 0, 1, 3}).reshape({T, N, E});
  return out_proj->forward(a);
}

// --- TransformerEncoderLayer -------------------------------------------------------------------

TransformerEncoderLayer::TransformerEncoderLayer(const TransformerLayerOptions& o) : o_(o) {
  check_layer_options("TransformerEncoderLayer", o);
  Generator* g = o.generator;
  self_attn = register_module("self_attn", std::make_shared<MultiheadAttention>(o.d_model, o.nhead, o.dropout, true,
                                                                                o.batch_first, g));
  linear1 = register_module("linear1", std::make_shared<Linear>(o.d_model, o.dim_feedforward, true, g));
  dropout = register_module("dropout", std::make_shared<Dropout>(o.dropout, g));
  linear2 = register_module("linear2", std::make_shared<Linear>(o.dim_feedforward, o.d_model, true, g));
  norm1 = register_module("norm1", std::make_shared<LayerNorm>(Shape{o.d_model}, o.layer_norm_eps));
  norm2 = register_module("norm2", std::make_shared<LayerNorm>(Shape{o.d_model}, o.layer_norm_eps));
  dropout1 = register_module("dropout1", std::make_shared<Dropout>(o.dropout, g));
  dropout2 = register_module("dropout2", std::make_shared<Dropout>(o.dropout, g));
}

TransformerEncoderLayer::TransformerEncoderLayer(int64_t d_model, int64_t nhead, int64_t dim_feedforward,
                                                 double dropout_p, Activation activation, bool norm_first,
                                                 bool batch_first, double layer_norm_eps, Generator* gen)
    : TransformerEncoderLayer(layer_options(d_model, nhead, dim_feedforward, dropout_p, activation, norm_first,
                                            batch_first, layer_norm_eps, gen)) {}

Tensor TransformerEncoderLayer::feed_forward(const Tensor& x) {
  return dropout2->forward(linear2->forward(dropout->forward(activate(o_.activation, linear1->forward(x)))));
}

Tensor TransformerEncoderLayer::forward(const Tensor& src, const Tensor& src_mask, const Tensor& src_key_padding_mask,
                                        bool is_causal) {
  const auto sa = [&](const Tensor& x) {
    return dropout1->forward(self_attn->forward(x, x, x, src_key_padding_mask, src_mask, is_causal));
  };
  if (o_.norm_first) {
    Tensor x = src + sa(norm1->forward(src));
    return x + feed_forward(norm2->forward(x));
  }
  Tensor x = norm1->forward(src + sa(src));
  return norm2->forward(x + feed_forward(x));
}

// --- TransformerDecoderLayer -------------------------------------------------------------------

TransformerDecoderLayer::TransformerDecoderLayer(const TransformerLayerOptions& o) : o_(o) {
  check_layer_options("TransformerDecoderLayer", o);
  Generator* g = o.generator;
  self_attn = register_module("self_attn", std::make_shared<MultiheadAttention>(o.d_model, o.nhead, o.dropout, true,
                                                                                o.batch_first, g));
  multihead_attn = register_module(
      "multihead_attn", std::make_shared<MultiheadAttention>(o.d_model, o.nhead, o.dropout, true, o.batch_first, g));
  linear1 = register_module("linear1", std::make_shared<Linear>(o.d_model, o.dim_feedforward, true, g));
  dropout = register_module("dropout", std::make_shared<Dropout>(o.dropout, g));
  linear2 = register_module("linear2", std::make_shared<Linear>(o.dim_feedforward, o.d_model, true, g));
  norm1 = register_module("norm1", std::make_shared<LayerNorm>(Shape{o.d_model}, o.layer_norm_eps));
  norm2 = register_module("norm2", std::make_shared<LayerNorm>(Shape{o.d_model}, o.layer_norm_eps));
  norm3 = register_module("norm3", std::make_shared<LayerNorm>(Shape{o.d_model}, o.layer_norm_eps));
  dropout1 = register_module("dropout1", std::make_shared<Dropout>(o.dropout, g));
  dropout2 = register_module("dropout2", std::make_shared<Dropout>(o.dropout, g));
  dropout3 = register_module("dropout3", std::make_shared<Dropout>(o.dropout, g));
}

TransformerDecoderLayer::TransformerDecoderLayer(int64_t d_model, int64_t nhead, int64_t dim_feedforward,
                                                 double dropout_p, Activation activation, bool norm_first,
                                                 bool batch_first, double layer_norm_eps, Generator* gen)
    : TransformerDecoderLayer(layer_options(d_model, nhead, dim_feedforward, dropout_p, activation, norm_first,
                                            batch_first, layer_norm_eps, gen)) {}

Tensor TransformerDecoderLayer::feed_forward(const Tensor& x) {
  return dropout3->forward(linear2->forward(dropout->forward(activate(o_.activation, linear1->forward(x)))));
}

Tensor TransformerDecoderLayer::forward(const Tensor& tgt, const Tensor& memory, const Tensor& tgt_mask,
                                        const Tensor& memory_mask, const Tensor& tgt_key_padding_mask,
                                        const Tensor& memory_key_padding_mask, bool tgt_is_causal,
                                        bool memory_is_causal) {
  const auto sa = [&](const Tensor& x) {
    return dropout1->forward(self_attn->forward(x, x, x, tgt_key_padding_mask, tgt_mask, tgt_is_causal));
  };
  const auto mha = [&](const Tensor& x) {
    return dropout2->forward(
        multihead_attn->forward(x, memory, memory, memory_key_padding_mask, memory_mask, memory_is_causal));
  };
  if (o_.norm_first) {
    Tensor x = tgt + sa(norm1->forward(tgt));
    x = x + mha(norm2->forward(x));
    return x + feed_forward(norm3->forward(x));
  }
  Tensor x = norm1->forward(tgt + sa(tgt));
  x = norm2->forward(x + mha(x));
  return norm3->forward(x + feed_forward(x));
}

// --- TransformerEncoder ------------------------------------------------------------------------

TransformerEncoder::TransformerEncoder(const TransformerLayerOptions& layer, int64_t num_layers, bool final_norm) {
  EMBER_CHECK(num_layers > 0, "TransformerEncoder", "num_layers must be positive, got ", num_layers);
  layers = register_module("layers", std::make_shared<ModuleList>());
  for (int64_t i = 0; i < num_layers; ++i) layers->push_back(std::make_shared<TransformerEncoderLayer>(layer));
  if (final_norm) norm = register_module("norm", std::make_shared<LayerNorm>(Shape{layer.d_model}, layer.layer_norm_eps));
}

Tensor TransformerEncoder::forward(const Tensor& src, const Tensor& mask, const Tensor& src_key_padding_mask,
                                   bool is_causal) {
  Tensor x = src;
  for (size_t i = 0; i < layers->size(); ++i) x = layer(i)->forward(x, mask, src_key_padding_mask, is_causal);
  return norm ? norm->forward(x) : x;
}

// --- positional embeddings ---------------------------------------------------------------------

namespace {
// The (T, d) rows [offset, offset + T) of table, shaped to add to x.
Tensor positions_for(const char* op, const Tensor& x, const Tensor& table, int64_t max_len, int64_t d,
                     bool batch_first, int64_t offset) {
  EMBER_CHECK(x.defined() && x.dim() == 3 && x.size(2) == d, op, "input must be ",
              batch_first ? "(N, T, d)" : "(T, N, d)", " with d = ", d, ", got ",
              x.defined() ? shape_str(x.shape()) : std::string("an undefined tensor"));
  const int64_t T = x.size(batch_first ? 1 : 0);
  EMBER_CHECK(offset >= 0 && offset + T <= max_len, op, "positions [", offset, ", ", offset + T,
              ") exceed max_len ", max_len, " (input ", shape_str(x.shape()), ")");
  Tensor pos = table.narrow(0, offset, T);  // (T, d)
  return batch_first ? pos : pos.unsqueeze(1);
}
}  // namespace

LearnedPositionalEmbedding::LearnedPositionalEmbedding(int64_t max_len, int64_t d, bool batch_first, Generator* gen)
    : max_len_(max_len), d_(d), batch_first_(batch_first) {
  EMBER_CHECK(max_len > 0 && d > 0, "LearnedPositionalEmbedding", "max_len and d must be positive, got (", max_len,
              ", ", d, ")");
  weight = register_parameter("weight", randn({max_len, d}, {}, gen) * 0.02);
}

Tensor LearnedPositionalEmbedding::forward(const Tensor& x, int64_t offset) {
  return x + positions_for("LearnedPositionalEmbedding", x, weight, max_len_, d_, batch_first_, offset);
}

SinusoidalPositionalEmbedding::SinusoidalPositionalEmbedding(int64_t max_len, int64_t d, bool batch_first)
    : max_len_(max_len), d_(d), batch_first_(batch_first) {
  EMBER_CHECK(max_len > 0 && d > 0, "SinusoidalPositionalEmbedding", "max_len and d must be positive, got (",
              max_len, ", ", d, ")");
  std::vector<float> table(static_cast<size_t>(max_len * d));
  for (int64_t t = 0; t < max_len; ++t)
    for (int64_t c = 0; c < d; ++c) {
      const double freq = std::pow(10000.0, -static_cast<double>(c - c % 2) / static_cast<double>(d));
      const double a = static_cast<double>(t) * freq;
      table[static_cast<size_t>(t * d + c)] = static_cast<float>(c % 2 == 0 ? std::sin(a) : std::cos(a));
    }
  pe = register_buffer("pe", from_vector(table, {max_len, d}));
}

Tensor SinusoidalPositionalEmbedding::forward(const Tensor& x, int64_t offset) {
  return x + positions_for("SinusoidalPositionalEmbedding", x, pe, max_len_, d_, batch_first_, offset);
}

}  // namespace ember::nn
