#include "cpu/kernels.h"

namespace ember::cpu {

void register_kernels() {
  register_elementwise_kernels();
  register_reduce_kernels();
  register_gemm_kernels();
  register_index_kernels();
  register_attention_kernels();
  register_conv_kernels();
  register_loss_kernels();
  register_norm_kernels();
  register_hsoftmax_kernels();
  register_rnn_kernels();
  register_optim_kernels();
  register_int8_kernels();
}

}  // namespace ember::cpu
