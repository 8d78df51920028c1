// The recurrence kinds of ember/ops/rnn.h, in a header of their own because the backends'
// RNN kernels take one too (src/prim/primitives.h) and backends stand below the ops.
#pragma once

namespace ember {

enum class RNNMode { rnn_tanh, rnn_relu, lstm, gru };

}  // namespace ember
