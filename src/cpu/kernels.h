// The CPU backend as the op layer sees it: one call that registers every CPU kernel
// (prim/registry.h) for the `cpu` backend slot, which also serves the stand-in device fake:N.
// Each src/cpu/<family>.cpp registers its own kernels; register_kernels calls them all.
#pragma once

namespace ember::cpu {

void register_kernels();

void register_elementwise_kernels();  // elementwise.cpp: copy, fill, unary, binary, where
void register_reduce_kernels();       // reduce.cpp: reduce_rows, sum_cols, arg_reduce_rows, softmax_rows
void register_gemm_kernels();         // gemm.cpp: bmm
void register_index_kernels();        // index.cpp: gather ... one_hot, random_fill
void register_attention_kernels();    // attention.cpp
void register_conv_kernels();         // conv.cpp
void register_loss_kernels();         // loss.cpp
void register_norm_kernels();         // norm.cpp
void register_hsoftmax_kernels();     // hsoftmax.cpp
void register_rnn_kernels();          // rnn.cpp
void register_optim_kernels();        // optim.cpp
void register_int8_kernels();         // int8_gemm.cpp: quantize_rows, int8_gemm

}  // namespace ember::cpu
