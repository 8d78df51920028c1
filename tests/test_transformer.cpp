// Attention and transformer modules (ember/nn/transformer.h) against the same computation
// written by hand from matmul, softmax and layer_norm_reference with the modules' own weights:
// MultiheadAttention (self and cross, (T, N, E) and batch-first, every mask kind), encoder and
// decoder layers (post- and pre-norm, relu and gelu), the encoder stack; PyTorch's state_dict
// names; dropout in train and eval mode; positional embeddings; bad input.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "ember/nn/transformer.h"
#include "ember/ops/attention.h"
#include "test_util.h"

using namespace ember;
using ember_test::check_close;
using ember_test::vals;

namespace {

struct MhaMasks {
  Tensor kpm;       // (N, S) bool, true = padding
  Tensor attn;      // (T, S) bool (true = may NOT attend, PyTorch) or float
  bool causal = false;
};

// MultiheadAttention by hand, one (batch, head) at a time, on (T, N, E) inputs.
Tensor mha_by_hand(const nn::MultiheadAttention& m, Tensor q_in, Tensor k_in, Tensor v_in, const MhaMasks& mk) {
  if (m.batch_first()) {
    q_in = q_in.transpose(0, 1), k_in = k_in.transpose(0, 1), v_in = v_in.transpose(0, 1);
  }
  const int64_t E = m.embed_dim(), H = m.num_heads(), D = E / H;
  const int64_t T = q_in.size(0), N = q_in.size(1), S = k_in.size(0);
  const Tensor& W = m.in_proj_weight;
  const Tensor& b = m.in_proj_bias;
  Tensor q = matmul(q_in, W.narrow(0, 0, E).t()) + b.narrow(0, 0, E);  // (T, N, E)
  Tensor k = matmul(k_in, W.narrow(0, E, E).t()) + b.narrow(0, E, E);  // (S, N, E)
  Tensor v = matmul(v_in, W.narrow(0, 2 * E, E).t()) + b.narrow(0, 2 * E, E);
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<Tensor> per_batch;
  for (int64_t n = 0; n < N; ++n) {
    std::vector<Tensor> per_head;
    for (int64_t h = 0; h < H; ++h) {
      Tensor qh = q.select(1, n).narrow(1, h * D, D), kh = k.select(1, n).narrow(1, h * D, D);
      Tensor vh = v.select(1, n).narrow(1, h * D, D);
      Tensor s = matmul(qh, kh.t()) / std::sqrt(static_cast<double>(D));  // (T, S)
      if (mk.attn.defined()) {
        if (mk.attn.dtype() == DType::boolean) s = masked_fill(s, mk.attn, -inf);
        else s = s + mk.attn;
      }
      if (mk.kpm.defined()) s = masked_fill(s, mk.kpm.select(0, n).reshape({1, S}), -inf);
      if (mk.causal) {
        std::vector<bool> upper;
        for (int64_t i = 0; i < T; ++i)
          for (int64_t j = 0; j < S; ++j) upper.push_back(j > i + (S - T));
        s = masked_fill(s, from_vector<bool>(upper, {T, S}, DType::boolean), -inf);
      }
      per_head.push_back(matmul(softmax(s, -1), vh));  // (T, D)
    }
    per_batch.push_back(cat(per_head, 1));  // (T, E)
  }
  Tensor o = matmul(stack(per_batch, 1), m.out_proj->weight.t()) + m.out_proj->bias;  // (T, N, E)
  return m.batch_first() ? o.transpose(0, 1) : o;
}

Tensor ln_by_hand(const nn::LayerNorm& ln, const Tensor& x) {
  return layer_norm_reference(x, ln.normalized_shape(), ln.weight, ln.bias, ln.eps());
}

Tensor ff_by_hand(const nn::Linear& l1, const nn::Linear& l2, nn::Activation a, const Tensor& x) {
  Tensor h = matmul(x, l1.weight.t()) + l1.bias;
  h = a == nn::Activation::relu ? relu(h) : gelu(h, a == nn::Activation::gelu_tanh ? "tanh" : "none");
  return matmul(h, l2.weight.t()) + l2.bias;
}

Tensor encoder_by_hand(const nn::TransformerEncoderLayer& l, const Tensor& x, const MhaMasks& mk) {
  const auto sa = [&](const Tensor& y) { return mha_by_hand(*l.self_attn, y, y, y, mk); };
  const auto ff = [&](const Tensor& y) { return ff_by_hand(*l.linear1, *l.linear2, l.options().activation, y); };
  if (l.options().norm_first) {
    Tensor y = x + sa(ln_by_hand(*l.norm1, x));
    return y + ff(ln_by_hand(*l.norm2, y));
  }
  Tensor y = ln_by_hand(*l.norm1, x + sa(x));
  return ln_by_hand(*l.norm2, y + ff(y));
}

std::vector<std::string> names(const nn::Module& m) {
  std::vector<std::string> out;
  for (const auto& [name, t] : m.state_dict().tensors) out.push_back(name);
  return out;
}

// Gradients of every parameter of m for loss = sum(f() * up), then cleared.
std::vector<Tensor> param_grads(nn::Module& m, const std::function<Tensor()>& f, const Tensor& up) {
  m.zero_grad();
  (f() * up).sum().backward();
  std::vector<Tensor> g;
  for (const Tensor& p : m.parameters()) g.push_back(p.grad());
  m.zero_grad();
  return g;
}

}  // namespace

TEST_SUITE("transformer") {
  TEST_CASE("MultiheadAttention: self and cross attention against the hand computation, every mask kind") {
    Generator g(401);
    for (bool batch_first : {false, true})
      for (int masks = 0; masks < 5; ++masks) {  // 0 none, 1 padding, 2 bool mask, 3 float mask, 4 causal + padding
        CAPTURE(batch_first);
        CAPTURE(masks);
        nn::MultiheadAttention m(12, 3, 0.0, true, batch_first, &g);
        // Non-zero biases so that their layout matters.
        m.in_proj_bias.detach().copy_(randn({36}, DType::f32, &g));
        m.out_proj->bias.detach().copy_(randn({12}, DType::f32, &g));
        const int64_t T = 5, S = 7, N = 2;
        const auto seq = [&](int64_t len) { return batch_first ? randn({N, len, 12}, DType::f32, &g) : randn({len, N, 12}, DType::f32, &g); };
        Tensor x = seq(T), mem = seq(S), val = seq(S);
        MhaMasks mk;
        if (masks == 1 || masks == 4) mk.kpm = from_vector<bool>({false, false, false, false, false, true, true,
                                                                  false, true, false, false, false, false, false},
                                                                 {N, S}, DType::boolean);
        if (masks == 2) mk.attn = gt(rand({T, S}, DType::f32, &g), scalar_tensor(0.7));
        if (masks == 3) mk.attn = randn({T, S}, DType::f32, &g);
        mk.causal = masks == 4;
        MhaMasks self_mk = mk;  // self-attention: S = T
        if (mk.kpm.defined()) self_mk.kpm = mk.kpm.narrow(1, 0, T);
        if (mk.attn.defined()) self_mk.attn = mk.attn.narrow(1, 0, T);
        // Self-attention (one fused projection GEMM), cross attention with key == value, and
        // with three different tensors.
        check_close(m.forward(x, x, x, self_mk.kpm, self_mk.attn, mk.causal), mha_by_hand(m, x, x, x, self_mk), 1e-4, 1e-4);
        check_close(m.forward(x, mem, mem, mk.kpm, mk.attn, mk.causal), mha_by_hand(m, x, mem, mem, mk), 1e-4, 1e-4);
        check_close(m.forward(x, mem, val, mk.kpm, mk.attn, mk.causal), mha_by_hand(m, x, mem, val, mk), 1e-4, 1e-4);
        // Parameter gradients.
        Tensor up = randn(x.shape(), DType::f32, &g);
        auto ga = param_grads(m, [&] { return m.forward(x, mem, val, mk.kpm, mk.attn, mk.causal); }, up);
        auto gb = param_grads(m, [&] { return mha_by_hand(m, x, mem, val, mk); }, up);
        REQUIRE(ga.size() == 4);
        for (size_t i = 0; i < ga.size(); ++i) check_close(ga[i], gb[i], 1e-3, 1e-4);
      }
    // A 3-D (N * H, T, S) mask.
    nn::MultiheadAttention m(8, 2, 0.0, true, false, &g);
    Tensor x = randn({4, 3, 8}, DType::f32, &g);
    Tensor m3 = randn({6, 4, 4}, DType::f32, &g);
    Tensor y = m.forward(x, x, x, Tensor(), m3);
    // Batch 1 alone with rows 2..3 (its two heads) of the mask.
    Tensor y_b1 = m.forward(x.narrow(1, 1, 1), x.narrow(1, 1, 1), x.narrow(1, 1, 1), Tensor(), m3.narrow(0, 2, 2));
    check_close(y.narrow(1, 1, 1), y_b1, 1e-5, 1e-5);
  }

  TEST_CASE("state_dict names and shapes are PyTorch's") {
    nn::MultiheadAttention m(16, 4);
    CHECK(names(m) == std::vector<std::string>{"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"});
    CHECK(m.in_proj_weight.shape() == (Shape{48, 16}));
    check_close(m.in_proj_bias, zeros({48}), 0, 0);
    check_close(m.out_proj->bias, zeros({16}), 0, 0);
    nn::MultiheadAttention nb(16, 4, 0.0, /*bias=*/false);
    CHECK(names(nb) == std::vector<std::string>{"in_proj_weight", "out_proj.weight"});

    nn::TransformerEncoderLayer enc(16, 4, 32);
    const std::vector<std::string> enc_names = {
        "self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias",
        "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias", "norm1.weight", "norm1.bias",
        "norm2.weight", "norm2.bias"};
    CHECK(names(enc) == enc_names);
    CHECK(enc.linear1->weight.shape() == (Shape{32, 16}));
    nn::TransformerDecoderLayer dec(16, 4, 32);
    const std::vector<std::string> dec_names = {
        "self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias",
        "multihead_attn.in_proj_weight", "multihead_attn.in_proj_bias", "multihead_attn.out_proj.weight",
        "multihead_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
        "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "norm3.weight", "norm3.bias"};
    CHECK(names(dec) == dec_names);
    nn::TransformerLayerOptions o;
    o.d_model = 8, o.nhead = 2, o.dim_feedforward = 16;
    nn::TransformerEncoder stack(o, 2, /*final_norm=*/true);
    const std::vector<std::string> sn = names(stack);
    REQUIRE(sn.size() == 2 * 12 + 2);
    CHECK(sn[0] == "layers.0.self_attn.in_proj_weight");
    CHECK(sn[12] == "layers.1.self_attn.in_proj_weight");
    CHECK(sn[24] == "norm.weight");
    // A state_dict loads into a fresh module of the same shape and gives the same output.
    nn::TransformerEncoderLayer enc2(16, 4, 32);
    enc.eval(), enc2.eval();
    Tensor x = randn({3, 2, 16});
    CHECK_FALSE(allclose(enc(x), enc2(x)));
    enc2.load_state_dict(enc.state_dict());
    check_close(enc(x), enc2(x), 0, 0);
  }

  TEST_CASE("TransformerEncoderLayer post- and pre-norm, relu and gelu, masks, against the hand computation") {
    Generator g(402);
    for (bool norm_first : {false, true})
      for (nn::Activation act : {nn::Activation::relu, nn::Activation::gelu, nn::Activation::gelu_tanh})
        for (bool batch_first : {false, true}) {
          CAPTURE(norm_first);
          CAPTURE(batch_first);
          nn::TransformerEncoderLayer l(12, 3, 20, 0.1, act, norm_first, batch_first, 1e-5, &g);
          l.eval();  // dropout off
          l.norm1->weight.detach().copy_(randn({12}, DType::f32, &g));
          l.norm2->bias.detach().copy_(randn({12}, DType::f32, &g));
          Tensor x = batch_first ? randn({2, 6, 12}, DType::f32, &g) : randn({6, 2, 12}, DType::f32, &g);
          MhaMasks mk;
          mk.kpm = from_vector<bool>({false, false, false, false, true, true, false, false, false, false, false, true},
                                     {2, 6}, DType::boolean);
          mk.causal = true;
          check_close(l.forward(x, Tensor(), mk.kpm, true), encoder_by_hand(l, x, mk), 2e-4, 2e-4);
          check_close(l.forward(x), encoder_by_hand(l, x, {}), 2e-4, 2e-4);
          Tensor up = randn(x.shape(), DType::f32, &g);
          auto ga = param_grads(l, [&] { return l.forward(x, Tensor(), mk.kpm, true); }, up);
          auto gb = param_grads(l, [&] { return encoder_by_hand(l, x, mk); }, up);
          for (size_t i = 0; i < ga.size(); ++i) check_close(ga[i], gb[i], 2e-3, 2e-4);
        }
  }

  TEST_CASE("TransformerDecoderLayer and TransformerEncoder against their layers composed by hand") {
    Generator g(403);
    for (bool norm_first : {false, true}) {
      CAPTURE(norm_first);
      nn::TransformerDecoderLayer d(8, 2, 16, 0.0, nn::Activation::relu, norm_first, false, 1e-5, &g);
      Tensor tgt = randn({5, 2, 8}, DType::f32, &g), mem = randn({7, 2, 8}, DType::f32, &g);
      MhaMasks self_mk, cross_mk;
      self_mk.causal = true;
      cross_mk.kpm = from_vector<bool>({false, false, false, false, false, false, true,
                                        true, false, false, false, false, false, false},
                                       {2, 7}, DType::boolean);
      const auto sa = [&](const Tensor& y) { return mha_by_hand(*d.self_attn, y, y, y, self_mk); };
      const auto ca = [&](const Tensor& y) { return mha_by_hand(*d.multihead_attn, y, mem, mem, cross_mk); };
      const auto ff = [&](const Tensor& y) { return ff_by_hand(*d.linear1, *d.linear2, nn::Activation::relu, y); };
      Tensor want;
      if (norm_first) {
        Tensor y = tgt + sa(ln_by_hand(*d.norm1, tgt));
        y = y + ca(ln_by_hand(*d.norm2, y));
        want = y + ff(ln_by_hand(*d.norm3, y));
      } else {
        Tensor y = ln_by_hand(*d.norm1, tgt + sa(tgt));
        y = ln_by_hand(*d.norm2, y + ca(y));
        want = ln_by_hand(*d.norm3, y + ff(y));
      }
      check_close(d.forward(tgt, mem, Tensor(), Tensor(), Tensor(), cross_mk.kpm, true), want, 2e-4, 2e-4);
    }
    nn::TransformerLayerOptions o;
    o.d_model = 8, o.nhead = 4, o.dim_feedforward = 12, o.dropout = 0.0, o.norm_first = true, o.generator = &g;
    nn::TransformerEncoder stack(o, 3, true);
    Tensor x = randn({4, 3, 8}, DType::f32, &g);
    Tensor want = x;
    for (size_t i = 0; i < 3; ++i) want = encoder_by_hand(*stack.layer(i), want, {});
    want = ln_by_hand(*stack.norm, want);
    check_close(stack(x), want, 2e-4, 2e-4);
  }

  TEST_CASE("dropout: off in eval mode, reproducible from the generator in training mode") {
    Generator g1(404), g2(404);
    nn::TransformerEncoderLayer a(8, 2, 16, 0.3, nn::Activation::relu, false, false, 1e-5, &g1);
    nn::TransformerEncoderLayer b(8, 2, 16, 0.3, nn::Activation::relu, false, false, 1e-5, &g2);
    Tensor x = randn({5, 2, 8});
    check_close(a(x), b(x), 0, 0);  // same init and the same dropout streams
    Tensor t1 = a(x);
    CHECK_FALSE(allclose(t1, a(x)));  // the stream moved on
    a.eval();
    Tensor e = a(x);
    check_close(e, a(x), 0, 0);
    check_close(e, encoder_by_hand(a, x, {}), 2e-4, 2e-4);
    CHECK_FALSE(allclose(t1, e, 1e-3, 1e-3));
  }

  TEST_CASE("positional embeddings: the sinusoidal table is a buffer, the learned one a parameter") {
    nn::SinusoidalPositionalEmbedding s(50, 6);
    CHECK(s.parameters().empty());
    REQUIRE(s.named_buffers().size() == 1);
    CHECK(s.named_buffers()[0].first == "pe");
    const std::vector<double> pe = vals(s.pe);
    for (int64_t t : {0, 7, 49})
      for (int64_t c = 0; c < 6; ++c) {
        const double a = static_cast<double>(t) / std::pow(10000.0, static_cast<double>(c - c % 2) / 6.0);
        CHECK(pe[t * 6 + c] == doctest::Approx(c % 2 ? std::cos(a) : std::sin(a)).epsilon(1e-6));
      }
    Tensor x = randn({2, 4, 6});
    check_close(s(x), x + s.pe.narrow(0, 0, 4), 0, 0);
    check_close(s.forward(x, 10), x + s.pe.narrow(0, 10, 4), 0, 0);
    nn::SinusoidalPositionalEmbedding tn(50, 6, /*batch_first=*/false);
    check_close(tn(x), x + tn.pe.narrow(0, 0, 2).unsqueeze(1), 0, 0);

    nn::LearnedPositionalEmbedding l(10, 6);
    REQUIRE(l.named_parameters().size() == 1);
    CHECK(l.named_parameters()[0].first == "weight");
    CHECK(l.weight.shape() == (Shape{10, 6}));
    l(x).sum().backward();
    Tensor gw = l.weight.grad();
    check_close(gw.narrow(0, 0, 4), full({4, 6}, 2.0), 0, 0);  // each position summed over 2 batches
    check_close(gw.narrow(0, 4, 6), zeros({6, 6}), 0, 0);
    CHECK_EMBER_ERROR(l.forward(x, 7), "LearnedPositionalEmbedding", "max_len", "(2, 4, 6)");
    CHECK_EMBER_ERROR(s(randn({2, 4, 5})), "SinusoidalPositionalEmbedding", "(2, 4, 5)");
  }

  TEST_CASE("bad configuration and input raise ember::Error naming the module and the shapes") {
    CHECK_EMBER_ERROR(nn::MultiheadAttention(10, 3), "MultiheadAttention", "10", "3", "divisible");
    CHECK_EMBER_ERROR(nn::MultiheadAttention(0, 1), "MultiheadAttention", "positive");
    CHECK_EMBER_ERROR(nn::TransformerEncoderLayer(10, 4), "MultiheadAttention", "divisible");
    CHECK_EMBER_ERROR(nn::TransformerEncoderLayer(8, 2, 16, 2.0), "TransformerEncoderLayer", "dropout");
    nn::TransformerLayerOptions o;
    o.d_model = 8, o.nhead = 2;
    CHECK_EMBER_ERROR(nn::TransformerEncoder(o, 0), "TransformerEncoder", "num_layers");
    nn::MultiheadAttention m(8, 2);
    Tensor x = randn({5, 2, 8});
    CHECK_EMBER_ERROR(m(randn({5, 2, 6}), x, x), "MultiheadAttention", "query", "(5, 2, 6)");
    CHECK_EMBER_ERROR(m(x, randn({4, 3, 8}), randn({4, 3, 8})), "MultiheadAttention", "(4, 3, 8)");
    CHECK_EMBER_ERROR(m.forward(x, x, x, Tensor(), ones({5, 4}, DType::boolean)), "MultiheadAttention", "attn_mask",
                      "(5, 4)", "(5, 5)");
    CHECK_EMBER_ERROR(m.forward(x, x, x, Tensor(), ones({3, 5, 5}, DType::boolean)), "MultiheadAttention",
                      "(4, 5, 5)", "(3, 5, 5)");
    CHECK_EMBER_ERROR(m.forward(x, x, x, zeros({2, 4}, DType::boolean)), "scaled_dot_product_attention",
                      "key_padding_mask", "(2, 4)");
  }
}
