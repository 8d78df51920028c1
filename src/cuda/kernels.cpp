#include "cuda/kernels.h"

#include "cuda/runtime.h"
#include "ember/core/allocator.h"

namespace ember::cuda {

void register_backend() {
  set_device_allocator(DeviceType::cuda, &caching_allocator());
  register_elementwise_kernels();
  register_reduce_kernels();
  register_gemm_kernels();
  register_index_kernels();
  register_random_kernels();
  register_attention_kernels();
  register_conv_kernels();
  register_loss_kernels();
  register_norm_kernels();
  register_hsoftmax_kernels();
  register_rnn_kernels();
  register_optim_kernels();
  register_int8_kernels();
}

}  // namespace ember::cuda
