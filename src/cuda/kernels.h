// The CUDA backend as the op layer sees it: register_backend registers every CUDA kernel
// (prim/registry.h) and the caching allocator of cuda:N storage. Each kernels/<family>.cu
// registers its own kernels; register_backend calls them all.
#pragma once

namespace ember::cuda {

void register_backend();

void register_elementwise_kernels();  // kernels/elementwise.cu: copy, fill, unary, binary, where
void register_reduce_kernels();       // kernels/reduce.cu
void register_gemm_kernels();         // kernels/gemm.cu: bmm
void register_index_kernels();        // kernels/index.cu
void register_random_kernels();       // kernels/random.cu
void register_attention_kernels();    // kernels/attention.cu
void register_conv_kernels();         // kernels/conv.cu
void register_loss_kernels();         // kernels/loss.cu
void register_norm_kernels();         // kernels/norm.cu
void register_hsoftmax_kernels();     // kernels/hsoftmax.cu
void register_rnn_kernels();          // kernels/rnn.cu
void register_optim_kernels();        // kernels/optim.cu
void register_int8_kernels();         // kernels/int8_gemm.cu: quantize_rows, int8_gemm

}  // namespace ember::cuda
