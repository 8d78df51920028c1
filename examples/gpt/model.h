// The G6 model: a GPT-2-style decoder (examples/gpt trains it; bench/gpu/g6g7_bench.cpp times the
// same class). Parameter names are those of the PyTorch model in bench/g6_gpt_torch.py:
//   wte.weight (V, d), wpe.weight (T, d), blocks.<l>.{ln1, qkv, proj, ln2, fc, out}.*, ln.*
// and the output layer is tied to wte (logits = ln(x) wte^T), so it has no weight of its own.
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "ember/ember.h"

namespace gpt {

namespace nn = ember::nn;
using ember::Tensor;

// Pre-norm block: x = x + proj(attention(qkv(ln1(x))));  x = x + out(gelu_tanh(fc(ln2(x)))).
class Block : public nn::Module {
 public:
  Block(int64_t d, int64_t heads, ember::Generator* gen) : heads_(heads) {
    ln1 = register_module("ln1", std::make_shared<nn::LayerNorm>(d));
    qkv = register_module("qkv", std::make_shared<nn::Linear>(d, 3 * d, true, gen));
    proj = register_module("proj", std::make_shared<nn::Linear>(d, d, true, gen));
    ln2 = register_module("ln2", std::make_shared<nn::LayerNorm>(d));
    fc = register_module("fc", std::make_shared<nn::Linear>(d, 4 * d, true, gen));
    out = register_module("out", std::make_shared<nn::Linear>(4 * d, d, true, gen));
  }

  // x (B, T, C) -> (B, T, C), causal self-attention over T.
  Tensor forward(const Tensor& x) {
    const int64_t B = x.size(0), T = x.size(1), C = x.size(2), D = C / heads_;
    std::vector<Tensor> q_k_v = ember::chunk(qkv->forward(ln1->forward(x)), 3, 2);  // 3 x (B, T, C)
    for (Tensor& t : q_k_v) t = t.reshape({B, T, heads_, D}).transpose(1, 2);       // (B, H, T, D), strided
    ember::AttentionOptions o;
    o.causal = true;
    Tensor y = ember::scaled_dot_product_attention(q_k_v[0], q_k_v[1], q_k_v[2], o).transpose(1, 2).reshape({B, T, C});
    Tensor h = x + proj->forward(y);
    return h + out->forward(ember::gelu(fc->forward(ln2->forward(h)), "tanh"));
  }

  std::shared_ptr<nn::LayerNorm> ln1, ln2;
  std::shared_ptr<nn::Linear> qkv, proj, fc, out;

 private:
  int64_t heads_;
};

class GPT : public nn::Module {
 public:
  GPT(int64_t vocab, int64_t context, int64_t layers, int64_t d, int64_t heads, ember::Generator* gen) {
    EMBER_CHECK(d % heads == 0, "gpt", "d_model ", d, " must be a multiple of the number of heads ", heads);
    wte = register_module("wte", std::make_shared<nn::Embedding>(vocab, d, std::nullopt, gen));
    wpe = register_module("wpe", std::make_shared<nn::Embedding>(context, d, std::nullopt, gen));
    blocks = register_module("blocks", std::make_shared<nn::ModuleList>());
    for (int64_t l = 0; l < layers; ++l) blocks->push_back(std::make_shared<Block>(d, heads, gen));
    ln = register_module("ln", std::make_shared<nn::LayerNorm>(d));
    // GPT-2's init: N(0, 0.02^2) everywhere, zero biases, and the two projections that write into
    // the residual stream scaled by 1/sqrt(2 layers) so its variance does not grow with depth.
    ember::NoGradGuard no_grad;
    const double resid_std = 0.02 / std::sqrt(2.0 * static_cast<double>(layers));
    nn::init::normal_(wte->weight, 0.0, 0.02, gen);
    nn::init::normal_(wpe->weight, 0.0, 0.02, gen);
    for (size_t l = 0; l < blocks->size(); ++l) {
      auto b = blocks->get<Block>(l);
      for (nn::Linear* lin : {b->qkv.get(), b->fc.get()}) nn::init::normal_(lin->weight, 0.0, 0.02, gen);
      for (nn::Linear* lin : {b->proj.get(), b->out.get()}) nn::init::normal_(lin->weight, 0.0, resid_std, gen);
      for (nn::Linear* lin : {b->qkv.get(), b->proj.get(), b->fc.get(), b->out.get()}) nn::init::zeros_(lin->bias);
    }
  }

  // ids (B, T) i64 -> logits (B, T, vocab)
  Tensor forward(const Tensor& ids) {
    // Positions 0 .. T-1 are the first T rows of wpe: a slice, no index lookup (and so no bounds
    // check reading ids on the host).
    EMBER_CHECK(ids.dim() == 2 && ids.size(1) <= wpe->num_embeddings(), "gpt",
                "token ids must be (B, T) with T <= ", wpe->num_embeddings(), " (the context), got ",
                ember::shape_str(ids.shape()));
    Tensor x = wte->forward(ids) + wpe->weight.narrow(0, 0, ids.size(1));
    for (size_t l = 0; l < blocks->size(); ++l) x = blocks->get<Block>(l)->forward(x);
    return ember::linear(ln->forward(x), wte->weight);  // tied output layer
  }

  std::shared_ptr<nn::Embedding> wte, wpe;
  std::shared_ptr<nn::ModuleList> blocks;
  std::shared_ptr<nn::LayerNorm> ln;
};

// AdamW's groups as GPT-2 trains: weight decay on matrices and embeddings, none on biases and
// LayerNorm parameters.
inline std::vector<ember::optim::ParamGroup> param_groups(const nn::Module& model, double weight_decay) {
  ember::optim::ParamGroup decay, no_decay;
  decay.weight_decay = weight_decay;
  no_decay.weight_decay = 0.0;
  for (const auto& [name, p] : model.named_parameters()) (p.dim() >= 2 ? decay : no_decay).params.push_back(p);
  return {decay, no_decay};
}

// Training FLOPs per token (forward + backward = 3 x forward, 2 FLOPs a multiply-add): the
// weight GEMMs, 12 d^2 per layer plus the tied output layer's V d, and causal attention's two
// T x T products, 2 T d per layer on average (half the keys).
inline double train_flops_per_token(int64_t vocab, int64_t context, int64_t layers, int64_t d) {
  const double L = static_cast<double>(layers), D = static_cast<double>(d);
  return 6.0 * (12.0 * L * D * D + static_cast<double>(vocab) * D) + 6.0 * L * static_cast<double>(context) * D;
}

}  // namespace gpt
