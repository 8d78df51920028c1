// Post-training dynamic int8 quantisation for inference (docs/deploy.md, "Quantising").
//
// Weights: per output channel (row), symmetric: w ~ q * scale, q in [-127, 127], scale =
// max|row| / 127. Activations: the same per batch row, at run time (dynamic: nothing to
// calibrate). The product runs in int8 with int32 sums and comes back as f32:
// y[m, n] = sum_k qx[m, k] qw[n, k] * sx[m] * sw[n] + b[n].
//
// int8 data is stored four values to an i32 element (little-endian bytes; a row of K values
// takes K4 = ceil(K / 4) elements, the padding bytes zero): the layout the GPU's dp4a reads, and
// a dtype every checkpoint format already has. A quantised layer's state dict holds exactly
// that (int8 weights + f32 scales + f32 bias), about a quarter of the f32 size.
//
//   nn::quantize_dynamic(model);   // every Linear, Conv1d, Embedding, LSTM, GRU and RNN, in place
//   Tensor y = model.forward(x);   // f32 in, f32 out; under NoGradGuard or not
//
// Quantised modules are inference-only: an input that requires a gradient while grad mode is
// on is an error, and their tensors are buffers (no parameters, nothing to train).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ember/core/tensor.h"
#include "ember/nn/conv.h"
#include "ember/nn/layers.h"
#include "ember/nn/module.h"
#include "ember/nn/rnn.h"

namespace ember {

// --- ops (through the op path: observers see quantize_rows and linear_int8) ---------------------

struct QuantizedRows {
  Tensor q;      // i32 (..., K4): the int8 codes, four to an element
  Tensor scale;  // f32 (...): max|row| / 127 (0 for an all-zero row, NaN for a row with inf/NaN)
};
// Symmetric per-row int8 quantisation of a floating x (..., K) (f16/bf16/f64 go through f32).
QuantizedRows quantize_rows(const Tensor& x);
std::vector<Tensor> op_outputs(const QuantizedRows& r);

// y = dequant(quant(x) . w_q^T) + bias: x floating (..., K) is quantised per row, w_q i32 (N, K4)
// holds the int8 weight rows, w_scale f32 (N), bias f32 (N) or undefined; y is f32 (..., N).
// With x already quantised (i32 (M, K4)) and w_scale, bias undefined: the raw int32 sums (M, N)
// (exact: K <= 131072 so that no int32 sum can overflow).
Tensor linear_int8(const Tensor& x, const Tensor& w_q, const Tensor& w_scale = Tensor(), const Tensor& bias = Tensor());

}  // namespace ember

namespace ember::nn {

// --- the packed int8 layout ---------------------------------------------------------------------

// int8 values of shape (..., K) -> i32 (..., ceil(K / 4)) on `device`.
Tensor pack_int8(const std::vector<int8_t>& values, const Shape& shape, Device device = Device::cpu());
// i32 (..., K4) -> the first K int8 values of each row, row-major.
std::vector<int8_t> unpack_int8(const Tensor& q, int64_t K);
// q i32 (..., K4), scale f32 (...) -> f32 (..., K): q * scale.
Tensor dequantize_rows(const Tensor& q, const Tensor& scale, int64_t K);

// --- modules ------------------------------------------------------------------------------------

// Linear with int8 weights. Buffers: weight i32 (out, ceil(in / 4)), weight_scale f32 (out),
// bias f32 (out) (without bias: none).
class QuantizedLinear : public Layer {
 public:
  // Zero weights (load a state dict into it), on `device`.
  QuantizedLinear(int64_t in_features, int64_t out_features, bool bias = true, Device device = Device::cpu());
  // The int8 form of a trained Linear (any float dtype; on its device).
  static std::shared_ptr<QuantizedLinear> from_float(const Linear& linear);
  Tensor forward(const Tensor& x) override;
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

  Tensor weight, weight_scale, bias;

 private:
  int64_t in_, out_;
};

// Conv1d (groups = 1) with int8 weights: each output channel's C_in * K weights are one int8
// row, in (tap, channel) order (weight[o, c, k] at k * C_in + c); the input windows (im2col: one row per sample and
// output position, quantised per row) go through linear_int8. Buffers: weight i32 (C_out, ceil(C_in * K / 4)),
// weight_scale f32 (C_out), bias f32 (C_out). Any stride, padding and dilation.
class QuantizedConv1d : public Layer {
 public:
  QuantizedConv1d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, Conv1dOptions options = {},
                  Device device = Device::cpu());
  static std::shared_ptr<QuantizedConv1d> from_float(const Conv1d& conv);
  Tensor forward(const Tensor& x) override;

  Tensor weight, weight_scale, bias;

 private:
  int64_t in_, out_, k_;
  Conv1dOptions opt_;
};

// Embedding with int8 rows (one scale per row). Buffers: weight i32 (num_embeddings,
// ceil(embedding_dim / 4)), weight_scale f32 (num_embeddings). A lookup gathers the packed rows
// and widens them with the int8 GEMM against a packed identity (exact), then scales them: f32
// (..., embedding_dim) out.
class QuantizedEmbedding : public Layer {
 public:
  QuantizedEmbedding(int64_t num_embeddings, int64_t embedding_dim, Device device = Device::cpu());
  static std::shared_ptr<QuantizedEmbedding> from_float(const Embedding& embedding);
  Tensor forward(const Tensor& indices) override;

  Tensor weight, weight_scale;

 private:
  int64_t num_, dim_;
  Tensor eye_;  // packed int8 identity (dim, ceil(dim / 4)), on the weight's device when used
};

// RNN, LSTM or GRU with int8 weights (both GEMMs of every step: the input projection over all
// steps at once, the recurrent one per step), with nn::RNNBase's forward contract
// (ember/nn/rnn.h: shapes, batch_first, h0/c0, lengths) and its buffer names: weight_ih_l{k}{sfx}
// and weight_hh_l{k}{sfx} as i32 int8 rows with weight_{ih,hh}_scale_l{k}{sfx} f32, and the f32
// biases. The gate math runs in f32. Inference only (no dropout between layers).
class QuantizedRNN : public Module {
 public:
  // Zero weights of the shape `mode` and `opts` give (load a state dict into it).
  QuantizedRNN(RNNMode mode, const RNNOptions& opts, Device device = Device::cpu());
  static std::shared_ptr<QuantizedRNN> from_float(const RNNBase& rnn);
  RNNResult forward(const Tensor& x, const Tensor& h0 = Tensor(), const Tensor& c0 = Tensor(),
                    const Tensor& lengths = Tensor());
  RNNMode mode() const { return mode_; }
  const RNNOptions& options() const { return opts_; }
  std::string type_name() const override;

 private:
  struct Weights {
    Tensor w_ih, s_ih, w_hh, s_hh, b_ih, b_hh;
  };
  RNNMode mode_;
  RNNOptions opts_;
  std::vector<Weights> weights_;  // index k * D + d
};

struct QuantizeOptions {
  bool linear = true;     // Linear -> QuantizedLinear
  bool rnn = true;        // RNN, LSTM, GRU -> QuantizedRNN
  bool conv = true;       // Conv1d (groups = 1) -> QuantizedConv1d
  bool embedding = true;  // Embedding -> QuantizedEmbedding
};
// Replaces, in place, every Linear / Conv1d / Embedding / RNN / LSTM / GRU submodule of `root`'s tree (at any depth)
// by its int8 form (Module::replace_module) and turns requires_grad off on every parameter
// left (the model is for inference now). Returns how many modules it replaced. `root` itself
// is not replaced (quantise a lone Linear with QuantizedLinear::from_float). Parents that
// keep typed handles to their children (a std::shared_ptr<Linear> member) must re-read them
// (nn::child below); Sequential follows by itself. Throws ember::Error, changing nothing, when
// a module to convert has its tensors on more than one device.
int64_t quantize_dynamic(Module& root, const QuantizeOptions& options = {});

// The direct submodule `name` of m as an M; throws ember::Error when there is none or it is
// another type.
std::shared_ptr<Module> child_module(const Module& m, const std::string& name);
[[noreturn]] void throw_child_type(const Module& m, const std::string& name);
template <class M>
std::shared_ptr<M> child(const Module& m, const std::string& name) {
  auto c = std::dynamic_pointer_cast<M>(child_module(m, name));
  if (!c) throw_child_type(m, name);
  return c;
}

// Bytes of a state dict's tensors (element size x count): the size of the model on disk,
// less the format's headers.
int64_t state_dict_bytes(const Module& m);

}  // namespace ember::nn
